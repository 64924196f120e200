#include "bgw/cli/app.hpp"

#include "bgw/aws/credential_chain.hpp"
#include "bgw/cli/sign_command.hpp"
#include "bgw/config/config.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/obs/log.hpp"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/spdlog.h>

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

/// For the sign tool: one resolution through the SDKs' chain (region from AWS_REGION).
std::optional<aws::credentials> load_credentials() {
    auto io = net::system_provider_io("");
    auto region = getenv_string("AWS_REGION").value_or("us-east-1");
    auto got = aws::resolve_credentials(io, region);
    if (!got) return std::nullopt;
    return got->creds;
}

/// The Bedrock API key, when the runtime is to be called with one: auth.mode bearer (its
/// token_file, else AWS_BEARER_TOKEN_BEDROCK), or AWS_BEARER_TOKEN_BEDROCK alone, as botocore.
std::optional<std::string> load_bearer(const config::config& cfg, std::string& why) {
    std::string token;
    if (!cfg.auth.token_file.empty()) {
        auto text = read_file(cfg.auth.token_file);
        if (!text) {
            why = "auth.token_file " + cfg.auth.token_file + " cannot be read";
            return std::nullopt;
        }
        token = *text;
    } else {
        token = getenv_string("AWS_BEARER_TOKEN_BEDROCK").value_or("");
    }
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' '))
        token.pop_back();
    if (token.empty() && cfg.auth.bearer) {
        why =
            "auth.mode is bearer but there is no key: set auth.token_file or "
            "AWS_BEARER_TOKEN_BEDROCK";
        return std::nullopt;
    }
    for (char c : token) {
        if (c < 0x21 || c > 0x7e) {
            why = "the Bedrock API key contains characters a header cannot carry";
            return std::nullopt;
        }
    }
    return token;
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
    std::string why;
    auto bearer = load_bearer(*cfg, why);
    if (!bearer) {
        std::cerr << "bedrock-gateway: " << why << "\n";
        return 2;
    }
    // SigV4 credentials from the SDKs' chain (or the pinned source), refreshed in the
    // background. Without any, the gateway still starts: requests get a 503 that says why, and
    // the refresher keeps looking (a metadata endpoint may come up later). With only a Bedrock
    // API key and nothing that needs SigV4 (no batch tier, no pinned source), none is sought.
    std::shared_ptr<net::credential_source> creds;
    if (bearer->empty() || cfg->batch.enabled || !cfg->credentials.source.empty()) {
        creds = std::make_shared<net::credential_source>(
            net::make_resolver(net::system_provider_io(cfg->upstream.ca_file), cfg->default_region,
                               cfg->credentials),
            [] {
                return std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
            });
        if (auto loaded = creds->load(); !loaded) {
            spdlog::warn("{{\"event\":\"no_credentials\",\"error\":\"{}\"}}",
                         loaded.error().message);
        }
        creds->run_in_background();
    }
    return net::run_server(cfg, std::move(creds), std::move(*bearer));
}

}  // namespace bgw::cli
