#pragma once
/// The command line: `bedrock-gateway [--config FILE] [--log-level L]`, `--check-config FILE`,
/// `--help`, `--version`, and `sign ...` (see sign_command.hpp).

namespace bgw::cli {

/// Runs the program; returns the exit code (0 ok, 1 runtime failure, 2 usage or config error).
int main(int argc, char** argv);

}  // namespace bgw::cli
