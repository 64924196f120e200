#include "bgw/cli/app.hpp"

#include "bgw/aws/credential_chain.hpp"
#include "bgw/cli/sign_command.hpp"
#include "bgw/config/config.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/obs/log.hpp"

#include <algorithm>
#include <chrono>
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
    "usage: bedrock-gateway [--config FILE] [--listen HOST:PORT] [--admin-listen HOST:PORT]\n"
    "                       [--log-level LEVEL] [--log-format json|text]\n"
    "       bedrock-gateway --check-config FILE\n"
    "       bedrock-gateway --probe http://HOST:PORT/PATH | /PATH\n"
    "       bedrock-gateway sign --region R --service S [--time YYYYMMDDTHHMMSSZ]\n"
    "                            [--access-key K --secret-key S [--session-token T]] < request\n"
    "       bedrock-gateway --help | --version\n"
    "\n"
    "Serves the Bedrock runtime API on the configured address (default 127.0.0.1:8080),\n"
    "re-signing every request with SigV4 using the gateway's own AWS credentials (found where\n"
    "the AWS SDKs look: environment, web identity, profile, container, EC2 metadata).\n"
    "  --config FILE        JSON configuration (default config/gateway.json;\n"
    "                       env BEDROCK_GATEWAY_CONFIG)\n"
    "  --listen HOST:PORT   where to serve (env BEDROCK_GATEWAY_LISTEN; overrides `listen`)\n"
    "  --admin-listen HOST:PORT  serve /healthz, /readyz and /metrics only there\n"
    "                       (env BEDROCK_GATEWAY_ADMIN_LISTEN; overrides `admin_listen`)\n"
    "  --log-level LEVEL    trace, debug, info, warn, error, critical, off\n"
    "                       (env BEDROCK_GATEWAY_LOG_LEVEL; overrides `log_level`)\n"
    "  --log-format FORMAT  json (one object per line) or text\n"
    "                       (env BEDROCK_GATEWAY_LOG_FORMAT; overrides `log_format`)\n"
    "  --check-config FILE  validate FILE (with the overrides above) and exit: 0 if valid,\n"
    "                       2 with the bad key and why otherwise\n"
    "  --probe URL          GET an http:// URL (e.g. /healthz); exit 0 on a 2xx answer, else 1\n"
    "                       (a container HEALTHCHECK without curl). Given a /PATH instead, GET\n"
    "                       it where the config serves /healthz: admin_listen if set, else listen\n"
    "Signals: SIGHUP reloads the config file (an invalid one is refused, the running one stays);\n"
    "SIGTERM/SIGINT stop accepting and let requests in flight finish (shutdown_grace_s).\n";

/// A key set from the command line or the environment, over what the file says.
struct override_value {
    std::string key;  ///< listen, admin_listen, log_level, log_format
    std::string value;
    std::string source;  ///< the flag or variable, for the error message
};

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

/// Reads and validates a config file with the overrides applied: the config, or what is wrong
/// and where.
result<std::shared_ptr<const config::config>> read_config(
    const std::string& path, const std::vector<override_value>& overrides) {
    auto text = read_file(path);
    if (!text) return validation_error("cannot read config file " + path);
    auto cfg = config::parse_config(*text);
    if (!cfg) return validation_error(path + ": " + cfg.error().message);
    for (const auto& o : overrides) {
        if (auto r = config::apply_override(*cfg, o.key, o.value, o.source); !r) return r.error();
    }
    // Only now is `listen` final: a flag or variable may have moved it off loopback.
    if (auto r = config::check_exposure(*cfg); !r) return r.error();
    // Like the AWS SDKs, one variable points every region's S3 or control plane elsewhere.
    if (auto r = config::apply_endpoint_env(*cfg, getenv_string("AWS_ENDPOINT_URL_S3").value_or(""),
                                            getenv_string("AWS_ENDPOINT_URL_BEDROCK").value_or(""));
        !r) {
        return r.error();
    }
    return std::make_shared<const config::config>(std::move(*cfg));
}

/// `--probe /PATH`: PATH on the address that serves the health endpoints (admin_listen when set,
/// else listen). A wildcard address is probed on loopback, which reaches it from the same host
/// or network namespace (the container HEALTHCHECK's case).
result<std::string> health_url(const config::config& cfg, std::string_view path) {
    std::string host = cfg.admin_listen ? cfg.admin_listen->host : cfg.listen_host;
    const std::uint16_t port = cfg.admin_listen ? cfg.admin_listen->port : cfg.listen_port;
    if (port == 0) {
        return validation_error("the health endpoints are on port 0 (any free port): probe a URL");
    }
    if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
    if (host == "::") host = "::1";
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    return "http://" + host + ":" + std::to_string(port) + std::string(path);
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

/// What the command line and the environment ask for, once every flag is read.
struct command_line {
    std::string config_path;
    std::vector<override_value> overrides;
    std::optional<std::string> check;       ///< --check-config FILE
    std::optional<std::string> probe_path;  ///< --probe /PATH (a URL is probed while parsing)
    std::optional<int> exit_code;           ///< set when parsing already finished the run
};

/// The file, then the environment, then the flags: the last word wins.
command_line parse_command_line(const std::vector<std::string_view>& args) {
    command_line cl;
    cl.config_path = getenv_string("BEDROCK_GATEWAY_CONFIG").value_or("config/gateway.json");
    for (auto [key, var] : {std::pair{"listen", "BEDROCK_GATEWAY_LISTEN"},
                            std::pair{"admin_listen", "BEDROCK_GATEWAY_ADMIN_LISTEN"},
                            std::pair{"log_level", "BEDROCK_GATEWAY_LOG_LEVEL"},
                            std::pair{"log_format", "BEDROCK_GATEWAY_LOG_FORMAT"}}) {
        if (auto v = getenv_string(var); v && !v->empty()) cl.overrides.push_back({key, *v, var});
    }
    for (std::size_t i = 0; i < args.size(); ++i) {
        auto a = args[i];
        bool has_value = i + 1 < args.size();
        if (a == "--help" || a == "-h") {
            std::cout << usage;
            cl.exit_code = 0;
            return cl;
        } else if (a == "--version") {
            std::cout << "bedrock-gateway " << BGW_VERSION << "\n";
            cl.exit_code = 0;
            return cl;
        } else if (a == "--probe" && has_value) {
            // A URL is probed as given; a path once every flag is read (it needs the config).
            const auto target = args[++i];
            if (!target.starts_with('/')) {
                cl.exit_code = net::probe(target, std::cerr);
                return cl;
            }
            cl.probe_path = std::string(target);
        } else if (a == "--check-config" && has_value) {
            cl.check = std::string(args[++i]);
        } else if (a == "--config" && has_value) {
            cl.config_path = args[++i];
        } else if ((a == "--listen" || a == "--admin-listen" || a == "--log-level" ||
                    a == "--log-format") &&
                   has_value) {
            std::string key(a.substr(2));
            std::replace(key.begin(), key.end(), '-', '_');
            cl.overrides.push_back({key, std::string(args[++i]), std::string(a)});
        } else {
            std::cerr << "bedrock-gateway: unknown or incomplete argument '" << a << "'\n" << usage;
            cl.exit_code = 2;
            return cl;
        }
    }
    return cl;
}

/// `--probe /PATH`: GET it where the config serves the health endpoints.
int probe_health(const command_line& cl) {
    auto cfg = read_config(cl.config_path, cl.overrides);
    auto url = cfg ? health_url(**cfg, *cl.probe_path) : result<std::string>(cfg.error());
    if (!url) {
        std::cerr << "probe: " << url.error().message << "\n";
        return 1;
    }
    return net::probe(*url, std::cerr);
}

/// `--check-config FILE`: 0 if it is valid with the overrides, 2 and why otherwise.
int check_config(const command_line& cl) {
    auto cfg = read_config(*cl.check, cl.overrides);
    if (!cfg) {
        std::cerr << "bedrock-gateway: " << cfg.error().message << "\n";
        return 2;
    }
    std::cout << "config ok: " << *cl.check << "\n";
    return 0;
}

/// SigV4 credentials from the SDKs' chain (or the pinned source), refreshed in the background.
/// Without any, the gateway still starts: requests get a 503 that says why, and the refresher
/// keeps looking (a metadata endpoint may come up later). With only a Bedrock API key and
/// nothing that needs SigV4 (no batch tier, no pinned source), none is sought: null.
std::shared_ptr<net::credential_source> start_credentials(const config::config& cfg,
                                                          const std::string& bearer) {
    if (!bearer.empty() && !cfg.batch.enabled && cfg.credentials.source.empty()) return nullptr;
    auto creds = std::make_shared<net::credential_source>(
        net::make_resolver(net::system_provider_io(cfg.upstream.ca_file), cfg.default_region,
                           cfg.credentials),
        [] { return std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()); });
    if (auto loaded = creds->load(); !loaded) {
        obs::event("no_credentials").str("error", loaded.error().message).warn();
    }
    creds->run_in_background();
    return creds;
}

/// Serves until SIGTERM/SIGINT: the config, logging, the credentials, then the listeners.
int serve(const command_line& cl) {
    auto first = read_config(cl.config_path, cl.overrides);
    if (!first) {
        std::cerr << "bedrock-gateway: " << first.error().message << "\n";
        return 2;
    }
    std::shared_ptr<const config::config> cfg = *first;
    obs::log_format format = obs::log_format::json;
    obs::parse_log_format(cfg->log_format, format);  // validated with the config
    obs::init_logging(cfg->log_level, format);
    std::string why;
    auto bearer = load_bearer(*cfg, why);
    if (!bearer) {
        std::cerr << "bedrock-gateway: " << why << "\n";
        return 2;
    }
    auto creds = start_credentials(*cfg, *bearer);
    // SIGHUP reads the same file with the same overrides.
    auto reload = [config_path = cl.config_path, overrides = cl.overrides] {
        return read_config(config_path, overrides);
    };
    return net::run_server(cfg, std::move(creds), std::move(*bearer), reload);
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string_view> args(argv + 1, argv + argc);
    if (!args.empty() && args[0] == "sign") {
        std::vector<std::string_view> rest(args.begin() + 1, args.end());
        return run_sign_command(rest, std::cin, std::cout, std::cerr, load_credentials());
    }
    const auto cl = parse_command_line(args);
    if (cl.exit_code) return *cl.exit_code;
    if (cl.probe_path) return probe_health(cl);
    if (cl.check) return check_config(cl);
    return serve(cl);
}

}  // namespace bgw::cli
