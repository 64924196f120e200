#include "bgw/cli/app.hpp"

int main(int argc, char** argv) { return bgw::cli::main(argc, argv); }
