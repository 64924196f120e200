#include "bgw/cli/app.hpp"

#include "bgw/aws/static_credentials.hpp"
#include "bgw/cli/sign_command.hpp"
#include "bgw/config/config.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/obs/log.hpp"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace bgw::cli {
namespace {

constexpr std::string_view usage =
    "usage: bedrock-gateway [--config FILE] [--log-level LEVEL]\n"
    "       bedrock-gateway --check-config FILE\n"
    "       bedrock-gateway sign --region R --service S [--time YYYYMMDDTHHMMSSZ]\n"
    "                            [--access-key K --secret-key S [--session-token T]] < request\n"
    "       bedrock-gateway --help | --version\n"
    "\n"
    "Serves the Bedrock runtime API on the configured address (default 127.0.0.1:8080),\n"
    "re-signing every request with SigV4 using the gateway's own AWS credentials\n"
    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY[/AWS_SESSION_TOKEN], else the AWS_PROFILE or\n"
    "default profile of the shared credentials file).\n"
    "  --config FILE       JSON configuration (default config/gateway.json)\n"
    "  --log-level LEVEL   trace, debug, info, warn, error, critical, off (overrides config)\n"
    "  --check-config FILE validate FILE and exit: 0 if valid, 2 with the bad key otherwise\n";

std::optional<std::string> getenv_string(std::string_view name) {
    const char* v = std::getenv(std::string(name).c_str());
    if (!v) return std::nullopt;
    return std::string(v);
}

std::optional<std::string> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

/// Reads and validates a config file; prints what is wrong and where.
std::shared_ptr<const config::config> load_config(const std::string& path) {
    auto text = read_file(path);
    if (!text) {
        std::cerr << "bedrock-gateway: cannot read config file " << path << "\n";
        return nullptr;
    }
    auto cfg = config::parse_config(*text);
    if (!cfg) {
        std::cerr << "bedrock-gateway: " << path << ": " << cfg.error().message << "\n";
        return nullptr;
    }
    // Like the AWS SDKs, one variable points every region's S3 or control plane elsewhere.
    if (auto r = config::apply_endpoint_env(*cfg, getenv_string("AWS_ENDPOINT_URL_S3").value_or(""),
                                            getenv_string("AWS_ENDPOINT_URL_BEDROCK").value_or(""));
        !r) {
        std::cerr << "bedrock-gateway: " << r.error().message << "\n";
        return nullptr;
    }
    return std::make_shared<const config::config>(std::move(*cfg));
}

std::optional<aws::credentials> load_credentials() {
    aws::env_lookup env = getenv_string;
    if (auto c = aws::credentials_from_env(env)) return c;
    if (auto path = aws::shared_credentials_path(env)) {
        if (auto text = read_file(*path)) {
            return aws::credentials_from_ini(*text, aws::profile_name(env));
        }
    }
    return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string_view> args(argv + 1, argv + argc);
    if (!args.empty() && args[0] == "sign") {
        std::vector<std::string_view> rest(args.begin() + 1, args.end());
        return run_sign_command(rest, std::cin, std::cout, std::cerr, load_credentials());
    }
    std::string config_path = "config/gateway.json";
    std::string log_level;
    for (std::size_t i = 0; i < args.size(); ++i) {
        auto a = args[i];
        bool has_value = i + 1 < args.size();
        if (a == "--help" || a == "-h") {
            std::cout << usage;
            return 0;
        } else if (a == "--version") {
            std::cout << "bedrock-gateway " << BGW_VERSION << "\n";
            return 0;
        } else if (a == "--check-config" && has_value) {
            auto cfg = load_config(std::string(args[++i]));
            if (!cfg) return 2;
            std::cout << "config ok: " << args[i] << "\n";
            return 0;
        } else if (a == "--config" && has_value) {
            config_path = args[++i];
        } else if (a == "--log-level" && has_value) {
            log_level = args[++i];
        } else {
            std::cerr << "bedrock-gateway: unknown or incomplete argument '" << a << "'\n" << usage;
            return 2;
        }
    }
    auto cfg = load_config(config_path);
    if (!cfg) return 2;
    if (!obs::init_logging(log_level.empty() ? cfg->log_level : log_level)) {
        std::cerr << "bedrock-gateway: --log-level: unknown level '" << log_level << "'\n";
        return 2;
    }
    return net::run_server(cfg, load_credentials());
}

}  // namespace bgw::cli
