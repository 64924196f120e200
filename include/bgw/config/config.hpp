#pragma once
/// The gateway configuration: an immutable value parsed from JSON, shared as
/// `std::shared_ptr<const config>`. Every key is documented in config/README.md.

#include "bgw/error.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace bgw::config {

/// Where one allowed region's runtime API lives.
struct region_endpoint {
    bool tls = true;   ///< https (verified) unless an explicit http:// override
    std::string host;  ///< "bedrock-runtime.us-east-1.amazonaws.com"
    std::uint16_t port = 443;
    std::string host_header;  ///< host, plus ":port" when the port is not the scheme's default

    bool operator==(const region_endpoint&) const = default;
};

struct upstream_config {
    std::string ca_file;  ///< empty: the system CA store
    std::chrono::milliseconds connect_timeout{3000};
    std::chrono::milliseconds response_timeout{120000};  ///< response head; non-stream body gaps
    /// Longest silence inside an event stream (Bedrock streams pause while a model thinks).
    std::chrono::milliseconds stream_idle_timeout{300000};
    std::size_t max_idle_per_host = 64;  ///< keep-alive pool bound per upstream host, per thread
    /// How long an idle pooled connection is kept. Past Bedrock's own idle close costs nothing
    /// (a connection the peer closed gets one free resend); dropping sooner costs a TLS
    /// handshake, so the default is the usual 60 s load-balancer idle timeout.
    std::chrono::milliseconds pool_idle_timeout{60000};
    std::size_t max_response_header_bytes = 64 * 1024;  ///< an upstream head larger is a 502

    bool operator==(const upstream_config&) const = default;
};

/// Bounds on what clients may send and hold (issue 10); each refusal is a clear HTTP error.
struct limits_config {
    std::size_t max_body_bytes = 25'000'000;   ///< Bedrock's own blob cap (413)
    std::size_t max_header_bytes = 64 * 1024;  ///< request line and headers together (431)
    std::size_t max_header_count = 100;        ///< header fields (431)
    std::size_t max_target_bytes = 8 * 1024;   ///< the request target (414)
    /// From a request's first byte to its last header byte, however slowly they trickle in
    /// (slowloris); the body then has client_idle_timeout.
    std::chrono::milliseconds header_timeout{10000};
    std::chrono::milliseconds client_idle_timeout{60000};  ///< keep-alive wait; body read bound
    std::size_t max_connections = 20'000;  ///< open client connections; more get 503 and a close
    std::size_t max_streams = 4'096;       ///< event streams at once; more get 503
    /// Requests at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS); more are
    /// refused with REFUSED_STREAM, which a client retries. Open streams also count against
    /// max_connections, gateway-wide.
    std::size_t h2_max_concurrent_streams = 100;
    /// Request body bytes held in memory at once, gateway-wide (at least max_body_bytes); a
    /// request whose next bytes would pass it gets 503 with Retry-After.
    std::size_t max_inflight_body_bytes = 256 * 1024 * 1024;

    bool operator==(const limits_config&) const = default;
};

/// Retries inside the gateway (issue 4), before any response byte has gone to the client.
struct retry_config {
    int max_attempts = 3;  ///< counts the first try: 1 = never retry
    std::chrono::milliseconds base_delay{100};
    std::chrono::milliseconds max_delay{20000};  ///< largest backoff cap between two attempts
    /// The longest one request waits inside the gateway, backoff sleeps and cool-down waits
    /// together (issue 17); 0 = never wait: a throttle is answered at once.
    std::chrono::milliseconds max_hold{1000};
    /// The longest a (region, model) rests after a throttle, escalating or as upstream's own
    /// Retry-After asks.
    std::chrono::milliseconds max_cooldown{10000};
    /// How long a client waits for the response head when it does not say
    /// (X-Gateway-Timeout-Ms); 0 = no deadline beyond upstream.response_timeout_ms per attempt.
    std::chrono::milliseconds default_timeout{0};

    bool operator==(const retry_config&) const = default;
};

/// A local quota for one model id (or "*"): requests and tokens per minute; 0 = no limit.
struct rate_limit {
    std::uint64_t rpm = 0;
    std::uint64_t tpm = 0;

    bool operator==(const rate_limit&) const = default;
};

/// The batch tier (issue 6): where records wait, where jobs' files go, when jobs are made.
struct batch_config {
    bool enabled = false;  ///< the `batch` section is present
    std::string bucket;    ///< S3 bucket for job input and output
    std::string prefix;    ///< key prefix inside it, without leading or trailing '/'
    std::string role_arn;  ///< the service role Bedrock assumes to read and write the bucket
    std::string spool_dir;
    std::size_t min_records = 100;  ///< Bedrock's per-job minimum is a quota: 100 or 1,000
    std::chrono::milliseconds max_wait{3'600'000};
    bool underfull_on_demand = false;  ///< `underfull`: "wait" (false) or "on-demand"
    std::chrono::milliseconds poll_interval{30'000};

    bool operator==(const batch_config&) const = default;
};

/// Where the gateway's own AWS credentials come from (issue 7).
struct credentials_config {
    /// Empty: the AWS SDKs' chain. Else one of environment, web-identity, profile, container, imds.
    std::string source;
    std::string profile;  ///< for source "profile" (empty: AWS_PROFILE, else "default")

    bool operator==(const credentials_config&) const = default;
};

/// How requests to the runtime API are authorised upstream.
struct auth_config {
    bool bearer = false;     ///< `mode`: "sigv4" (false) or "bearer" (a Bedrock API key)
    std::string token_file;  ///< bearer: file holding the key (else AWS_BEARER_TOKEN_BEDROCK)

    bool operator==(const auth_config&) const = default;
};

/// A `host:port` to listen on (`listen`, `admin_listen`, `--listen`).
struct listen_address {
    std::string host;
    std::uint16_t port = 0;

    bool operator==(const listen_address&) const = default;
};

/// What a model costs (issue 8), in USD, for `bedrock_gateway_estimated_cost_usd_total`. On-demand
/// tokens cost the per-1k prices; batch tokens half of them (the provider card's multiplier);
/// a provisioned model costs its model units by the hour, whatever it serves.
struct price {
    double input_per_1k = 0;
    double output_per_1k = 0;
    double model_unit_hour = 0;  ///< provisioned: USD per model unit and hour
    unsigned model_units = 0;    ///< provisioned: how many model units were bought

    bool operator==(const price&) const = default;
};

/// A key an app presents to use the gateway (issue 10): stored as its SHA-256, never itself.
struct caller_key {
    std::array<unsigned char, 32> sha256{};
    std::vector<std::string> models;   ///< model ids / route names it may call; empty: any
    std::vector<std::string> regions;  ///< regions its requests may run in; empty: any allowed
    rate_limit limit;                  ///< its own requests and tokens per minute; 0: none

    bool operator==(const caller_key&) const = default;
};

/// How a target is paid for (issue 5).
enum class tier { on_demand, provisioned, batch };

/// "on-demand", "provisioned", "batch".
std::string_view tier_name(tier t);
/// The inverse of tier_name(); false for anything else.
bool parse_tier(std::string_view s, tier& out);

/// One place a routed request may run.
struct route_target {
    std::string region;  ///< always in `regions`
    config::tier tier = tier::on_demand;
    std::string model_id;      ///< sent upstream instead of the route name (a provisioned ARN...)
    std::string service_tier;  ///< priority|default|flex|reserved, or empty: the client's own

    bool operator==(const route_target&) const = default;
};

/// A named, ordered list of targets; the app names it where a model id goes.
struct route {
    std::vector<route_target> targets;

    bool operator==(const route&) const = default;
};

/// The optional TLS listener (issue 19): the same API as `listen`, for clients that insist on
/// https://; the certificate and key are read again on SIGHUP.
struct tls_listener_config {
    listen_address listen;
    std::string cert_file;  ///< PEM: the leaf, then any intermediates
    std::string key_file;   ///< PEM

    bool operator==(const tls_listener_config&) const = default;
};

/// Fleet mode (issue 20): the Redis server every gateway of a fleet shares its limits and
/// cool-downs on. The URL is checked by parse_config; the password file is read at start.
struct shared_state_config {
    std::string url;            ///< `redis://[user@]host[:port][/db]` or `rediss://...`
    std::string password_file;  ///< empty: no AUTH
    bool tls = false;           ///< true also when the URL says rediss://
    std::string ca_file;        ///< TLS trust for Redis; empty: the system's
    std::string key_prefix = "bgw:";
    std::chrono::milliseconds timeout{5};  ///< bound on each call on a request's path
    unsigned fleet_size = 0;               ///< for the local fallback; 0: as observed

    bool operator==(const shared_state_config&) const = default;
};

struct config {
    std::string listen_host = "127.0.0.1";
    std::uint16_t listen_port = 8080;
    /// Where /healthz, /readyz and /metrics are served instead of the main listener, if set.
    std::optional<listen_address> admin_listen;
    std::optional<tls_listener_config> tls;
    std::string default_region = "us-east-1";
    std::map<std::string, region_endpoint, std::less<>> regions;  ///< the allow-list
    /// Per allowed region: the control plane (`bedrock.{r}.amazonaws.com`) and S3, for batch.
    std::map<std::string, region_endpoint, std::less<>> control_endpoints;
    std::map<std::string, region_endpoint, std::less<>> s3_endpoints;
    upstream_config upstream;
    limits_config limits;
    retry_config retry;
    /// Model id as the client sends it (or "*" for each model without its own entry).
    std::map<std::string, rate_limit, std::less<>> rate_limits;
    std::map<std::string, route, std::less<>> routes;  ///< by name (what the app sends)
    batch_config batch;
    credentials_config credentials;
    auth_config auth;
    /// By model id: the target's (e.g. a provisioned ARN), else the name the client sent.
    std::map<std::string, price, std::less<>> prices;
    /// By name (for logs): who may call. Empty: anyone who reaches the listener.
    std::map<std::string, caller_key, std::less<>> caller_keys;
    /// Listening beyond loopback without caller keys must be asked for by name.
    bool allow_unauthenticated = false;
    std::string log_level = "info";
    std::string log_format = "json";  ///< "json" (one object per line) or "text"
    unsigned threads = 0;             ///< 0: one per core
    /// On SIGTERM/SIGINT: how long in-flight requests and streams may take to finish.
    std::chrono::milliseconds shutdown_grace{30'000};
    /// The read-only control plane (ListInferenceProfiles, ...): how long a successful answer is
    /// served from the gateway's cache (per region, path and query); 0: never cached.
    std::chrono::seconds control_plane_cache{60};
    /// Shared limits and cool-downs on Redis; absent: every gateway on its own.
    std::optional<shared_state_config> shared_state;
};

/// The price entry for a request's target `model_id`, else for the model the client named.
const price* find_price(const config& cfg,
                        std::string_view model_id,
                        std::string_view client_model);

/// The estimated cost of one answer's tokens: per-1k prices, times 0.5 for batch; 0 for
/// provisioned (paid by the hour, see price::model_unit_hour).
double token_cost_usd(const price& p,
                      tier t,
                      std::uint64_t input_tokens,
                      std::uint64_t output_tokens);

/// Refuses a config that would let anyone who reaches a non-loopback `listen` spend the
/// gateway's AWS credentials: that needs `caller_keys`, or `allow_unauthenticated: true`.
/// Checked after the command-line and environment overrides.
result<void> check_exposure(const config& cfg);

/// Every model id the config names (route names, targets' model ids, rate_limits and prices
/// keys): the metrics label these as they are, whatever the bound on other models.
std::set<std::string, std::less<>> named_models(const config& cfg);

/// Settings that only a restart can change (the listeners, threads, TLS trust, the pool bound,
/// credentials, auth and the batch tier): the JSON names of those that differ. A SIGHUP reload
/// that would change one is refused as a whole.
std::vector<std::string> restart_only_changes(const config& running, const config& next);

/// Sets one of the few keys the command line and the environment override (a container sets
/// them without mounting a file): `listen`, `admin_listen`, `log_level`, `log_format`. An error
/// names `source` (e.g. "--listen" or "BEDROCK_GATEWAY_LISTEN") and says why the value is bad.
result<void> apply_override(config& cfg,
                            std::string_view key,
                            std::string_view value,
                            std::string_view source);

/// Parses `host:port` (IPv6 as `[::1]:8080`); errors are prefixed with `path`.
result<listen_address> parse_listen_address(std::string_view s, std::string_view path);

/// The regions allowed when the config names none (Bedrock runtime regions, commercial partition).
const std::vector<std::string_view>& default_regions();

/// True for names shaped like an AWS region (`^[a-z]{2}(-[a-z]+)+-\d$`).
bool is_region_name(std::string_view s);

/// The standard endpoint of a region: https://bedrock-runtime.{region}.amazonaws.com
region_endpoint standard_endpoint(std::string_view region);

/// The standard endpoints of a region's control plane and S3 (path-style).
region_endpoint standard_control_endpoint(std::string_view region);
region_endpoint standard_s3_endpoint(std::string_view region);

/// Points every region's S3 / control plane at one URL, as the AWS SDKs do with
/// `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL_BEDROCK`. Empty: unchanged.
result<void> apply_endpoint_env(config& cfg, std::string_view s3_url, std::string_view bedrock_url);

/// Parses an endpoint override URL: `http(s)://host[:port]` with no path, query or credentials.
result<region_endpoint> parse_endpoint(std::string_view url);

/// Parses and validates a whole config document. Errors name the JSON path of the bad key
/// (e.g. `upstream.connect_timeout_ms: must be an integer between 1 and 600000`), and unknown
/// keys are errors.
result<config> parse_config(std::string_view json);

}  // namespace bgw::config
