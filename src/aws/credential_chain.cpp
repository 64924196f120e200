// The AWS SDKs' credential provider chain as pure functions over provider_io. Behaviour follows
// botocore (credentials.py, configloader.py) where the SDKs agree; deviations are commented.
// Every error message names the source and the reason, and never a secret: no secret key,
// session token, web identity token, authorization token, process output or response body
// (STS's own <Code>/<Message> excepted: they are AWS's text and carry no credentials).

#include "bgw/aws/credential_chain.hpp"

#include "bgw/aws/credentials/common.hpp"
#include "bgw/aws/credentials/credentials_json.hpp"
#include "bgw/aws/credentials/ini.hpp"
#include "bgw/aws/credentials/sts.hpp"
#include "bgw/aws/sign_request.hpp"
#include "bgw/http/json.hpp"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <utility>

#include <boost/url/parse.hpp>
#include <rapidjson/document.h>

namespace bgw::aws {

using namespace cred;
namespace {

using namespace std::chrono;

struct profile_entry {
    ini_section config;  ///< from the config file
    ini_section creds;   ///< from the credentials file
    ini_section all;     ///< both, the credentials file winning (botocore's full_config)
};

struct profile_store {
    std::map<std::string, profile_entry> profiles;
    std::string config_path;  ///< for messages; may be empty when there is no HOME
    std::string creds_path;
};

std::string expand_home(const provider_io& io, std::string path) {
    if (path == "~" || path.starts_with("~/")) {
        if (auto home = env_var(io, "HOME")) return *home + path.substr(1);
    }
    return path;
}

profile_store load_profiles(const provider_io& io) {
    profile_store store;
    if (auto p = env_var(io, "AWS_CONFIG_FILE")) {
        store.config_path = expand_home(io, *p);
    } else if (auto home = env_var(io, "HOME")) {
        store.config_path = *home + "/.aws/config";
    }
    if (auto p = shared_credentials_path(io.env)) store.creds_path = expand_home(io, *p);

    // A missing file is no error: most hosts have only one of the two, or neither.
    if (!store.config_path.empty()) {
        if (auto text = io.read_file(store.config_path)) {
            for (auto& [name, keys] : parse_ini(*text)) {
                // Config-file sections are `[default]` and `[profile NAME]`; others (sso-session,
                // services, or a bare `[NAME]`) are no profiles, as in botocore.
                std::string profile;
                if (name == "default") {
                    profile = name;
                } else if (name.starts_with("profile") && name.size() > 7 &&
                           (name[7] == ' ' || name[7] == '\t')) {
                    std::string_view rest = trim(std::string_view(name).substr(7));
                    if (rest.size() >= 2 && rest.front() == '"' && rest.back() == '"')
                        rest = rest.substr(1, rest.size() - 2);
                    profile = std::string(rest);
                }
                if (profile.empty()) continue;
                for (auto& [k, v] : keys) store.profiles[profile].config[k] = v;
            }
        }
    }
    if (!store.creds_path.empty()) {
        if (auto text = io.read_file(store.creds_path)) {
            for (auto& [name, keys] : parse_ini(*text)) store.profiles[name].creds = keys;
        }
    }
    for (auto& [name, p] : store.profiles) {
        p.all = p.config;
        for (auto& [k, v] : p.creds) p.all[k] = v;
    }
    return store;
}

std::optional<std::string> key(const ini_section& s, std::string_view name) {
    auto it = s.find(std::string(name));
    if (it == s.end() || it->second.empty()) return std::nullopt;
    return it->second;
}

bool has_static_keys(const ini_section& s) {
    return key(s, "aws_access_key_id") || key(s, "aws_secret_access_key");
}

/// Static keys in one file's section: nullopt when there are none, an error when only one of the
/// pair is there (botocore's PartialCredentialsError).
std::optional<result<credentials>> static_keys(const ini_section& s, std::string_view file) {
    auto id = key(s, "aws_access_key_id");
    auto secret = key(s, "aws_secret_access_key");
    if (!id && !secret) return std::nullopt;
    if (!id || !secret) {
        return result<credentials>(unavailable(
            std::string(id ? "aws_secret_access_key" : "aws_access_key_id") + " is missing in " +
            std::string(file) + " (the other key of the pair is there)"));
    }
    credentials c{*id, *secret, {}};
    // aws_security_token: the older name botocore still reads.
    if (auto t = key(s, "aws_session_token")) {
        c.session_token = *t;
    } else if (auto legacy = key(s, "aws_security_token")) {
        c.session_token = *legacy;
    }
    return result<credentials>(std::move(c));
}

// --- Profiles ------------------------------------------------------------------------------------

struct profile_ctx {
    const provider_io& io;
    std::string_view region;
    const profile_store& store;
};

std::string files_text(const profile_store& s) {
    if (s.config_path.empty() && s.creds_path.empty())
        return "config nor credentials file (HOME, AWS_CONFIG_FILE and "
               "AWS_SHARED_CREDENTIALS_FILE are all unset)";
    auto name = [](const std::string& p) { return p.empty() ? std::string("(no path)") : p; };
    return name(s.config_path) + " nor " + name(s.creds_path);
}

/// Everything in a profile but role_arn + source_profile, in botocore's ProfileProviderBuilder
/// order: web identity, SSO, credentials-file keys, credential_process, config-file keys.
/// nullopt when the profile holds none of them.
provider_result profile_without_role(const profile_ctx& ctx, const std::string& name) {
    const auto& p = ctx.store.profiles.at(name);
    const std::string label = "profile " + name;
    auto role_arn = key(p.all, "role_arn");
    if (auto token_file = key(p.all, "web_identity_token_file"); token_file && role_arn) {
        auto got = web_identity_call(
            ctx.io, key(p.all, "region").value_or(std::string(ctx.region)),
            expand_home(ctx.io, *token_file), *role_arn,
            key(p.all, "role_session_name").value_or(default_session_name(ctx.io)),
            label + " (web identity)");
        if (!got)
            return result<timed_credentials>(prefixed(label + " (web identity)", got.error()));
        return got;
    }
    if (key(p.all, "sso_session") || key(p.all, "sso_start_url") || key(p.all, "sso_account_id")) {
        return result<timed_credentials>(unavailable(
            label +
            " uses IAM Identity Center (sso_*), which the gateway does not support; "
            "use credential_process (e.g. `aws configure export-credentials`) or keys"));
    }
    if (auto s = static_keys(p.creds, ctx.store.creds_path)) {
        if (!*s) return result<timed_credentials>(prefixed(label, s->error()));
        return result<timed_credentials>(timed_credentials{std::move(**s), std::nullopt, label});
    }
    if (auto command = key(p.all, "credential_process")) {
        const std::string source = label + " (credential_process)";
        // The command line is not quoted in errors: people put secrets in arguments.
        auto out = ctx.io.run(*command);
        if (!out) return result<timed_credentials>(prefixed(source, out.error()));
        auto got = credentials_json(*out, true);
        if (!got) return result<timed_credentials>(prefixed(source, got.error()));
        got->source = source;
        return got;
    }
    if (auto s = static_keys(p.config, ctx.store.config_path)) {
        if (!*s) return result<timed_credentials>(prefixed(label, s->error()));
        return result<timed_credentials>(timed_credentials{std::move(**s), std::nullopt, label});
    }
    return std::nullopt;
}

result<timed_credentials> assume_role_profile(const profile_ctx& ctx,
                                              const std::string& name,
                                              std::vector<std::string>& visited);

/// The credentials a profile used as a source_profile yields (botocore's
/// _resolve_credentials_from_profile): its own keys etc. when it has static keys or no role,
/// else its role assumed in turn.
result<timed_credentials> source_credentials(const profile_ctx& ctx,
                                             const std::string& name,
                                             std::vector<std::string>& visited) {
    const auto& p = ctx.store.profiles.at(name);
    const bool assumes = key(p.all, "role_arn") && !key(p.all, "web_identity_token_file");
    if (has_static_keys(p.all) || !assumes) {
        auto got = profile_without_role(ctx, name);
        if (!got) return unavailable("source profile " + name + " has no credentials");
        return std::move(*got);
    }
    return assume_role_profile(ctx, name, visited);
}

result<timed_credentials> assume_role_profile(const profile_ctx& ctx,
                                              const std::string& name,
                                              std::vector<std::string>& visited) {
    const auto& p = ctx.store.profiles.at(name);
    const std::string label = "profile " + name + " (assume role)";
    auto source_profile = key(p.all, "source_profile");
    if (key(p.all, "credential_source")) {
        return unavailable(label + ": credential_source is not supported by the gateway; " +
                           "use source_profile, or the gateway's own credentials.source");
    }
    if (!source_profile)
        return unavailable(label + ": role_arn needs source_profile (or web_identity_token_file)");
    if (key(p.all, "mfa_serial")) {
        return unavailable(label + ": mfa_serial needs an MFA code typed in, which a gateway " +
                           "cannot do");
    }
    if (!ctx.store.profiles.contains(*source_profile)) {
        return unavailable(label + ": its source_profile " + *source_profile + " is in neither " +
                           files_text(ctx.store));
    }
    // botocore allows exactly one revisit: a profile naming itself as source_profile, using its
    // own static keys to assume its role. Anything else seen before is a loop.
    if (std::find(visited.begin(), visited.end(), *source_profile) != visited.end() &&
        (*source_profile != name || !has_static_keys(ctx.store.profiles.at(name).all))) {
        std::string chain;
        for (const auto& v : visited) chain += v + " -> ";
        return unavailable(label + ": source_profile loop: " + chain + *source_profile);
    }
    visited.push_back(*source_profile);
    result<timed_credentials> src = unavailable("profile " + name + " has no keys of its own");
    if (*source_profile != name) {
        src = source_credentials(ctx, *source_profile, visited);
    } else if (auto own = profile_without_role(ctx, name)) {
        src = std::move(*own);
    }
    if (!src) return prefixed(label, src.error());

    assume_role_params params;
    params.role_arn = *key(p.all, "role_arn");
    params.session_name = key(p.all, "role_session_name").value_or(default_session_name(ctx.io));
    params.external_id = key(p.all, "external_id");
    params.duration_seconds = key(p.all, "duration_seconds");
    if (params.duration_seconds &&
        !std::all_of(params.duration_seconds->begin(), params.duration_seconds->end(),
                     [](char c) { return c >= '0' && c <= '9'; })) {
        return unavailable(label + ": duration_seconds must be a whole number of seconds");
    }
    const std::string region = key(p.all, "region").value_or(std::string(ctx.region));
    auto got = assume_role_call(ctx.io, region, src->creds, params, label);
    if (!got) return prefixed(label, got.error());
    return got;
}

/// nullopt with `missing` saying why when the profile does not exist (implicitly) or holds no
/// credentials.
provider_result profile_provider(const provider_io& io,
                                 std::string_view region,
                                 std::string_view profile,
                                 std::string& missing) {
    const bool named = !profile.empty() || env_var(io, "AWS_PROFILE");
    const std::string name = !profile.empty() ? std::string(profile) : profile_name(io.env);
    const auto store = load_profiles(io);
    if (!store.profiles.contains(name)) {
        missing = "profile " + name + " is in neither " + files_text(store);
        // Only a profile someone asked for by name must exist; the implicit default need not.
        if (named) return result<timed_credentials>(unavailable(missing));
        return std::nullopt;
    }
    const profile_ctx ctx{io, region, store};
    const auto& p = store.profiles.at(name);
    // botocore's AssumeRoleProvider comes before the plain profile providers, and leaves a role
    // with web_identity_token_file to the web identity provider.
    if (key(p.all, "role_arn") && !key(p.all, "web_identity_token_file")) {
        std::vector<std::string> visited{name};
        return assume_role_profile(ctx, name, visited);
    }
    auto got = profile_without_role(ctx, name);
    if (!got) {
        missing = "profile " + name +
                  " has no credentials (no role_arn, credential_process or aws_access_key_id)";
    }
    return got;
}

// --- Environment, web identity, container, IMDS --------------------------------------------------

provider_result environment_provider(const provider_io& io, std::string& missing) {
    auto c = credentials_from_env(io.env);
    if (!c) {
        missing = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set";
        return std::nullopt;
    }
    timed_credentials out{std::move(*c), std::nullopt, "environment"};
    // AWS_CREDENTIAL_EXPIRATION: botocore's way to say the variables hold temporary keys.
    if (auto exp = env_var(io, "AWS_CREDENTIAL_EXPIRATION")) {
        out.expiration = parse_iso8601(*exp);
        if (!out.expiration) {
            return result<timed_credentials>(
                unavailable("environment: AWS_CREDENTIAL_EXPIRATION is not an ISO 8601 time"));
        }
    }
    return result<timed_credentials>(std::move(out));
}

provider_result web_identity_provider(const provider_io& io,
                                      std::string_view region,
                                      std::string& missing) {
    auto token_file = env_var(io, "AWS_WEB_IDENTITY_TOKEN_FILE");
    auto role_arn = env_var(io, "AWS_ROLE_ARN");
    if (!token_file || !role_arn) {
        missing = "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN are not both set";
        return std::nullopt;
    }
    auto session = env_var(io, "AWS_ROLE_SESSION_NAME").value_or(default_session_name(io));
    auto got = web_identity_call(io, region, *token_file, *role_arn, session, "web-identity");
    if (!got) return result<timed_credentials>(prefixed("web identity", got.error()));
    return got;
}

provider_result container_provider(const provider_io& io, std::string& missing) {
    fetch_request req;
    req.method = "GET";
    // RELATIVE_URI wins (ECS sets it; FULL_URI is EKS Pod Identity and Greengrass).
    if (auto rel = env_var(io, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")) {
        req.url = "http://169.254.170.2" + (rel->starts_with("/") ? *rel : "/" + *rel);
    } else if (auto full = env_var(io, "AWS_CONTAINER_CREDENTIALS_FULL_URI")) {
        if (!container_host_allowed(*full)) {
            auto url = boost::urls::parse_uri(*full);
            const std::string host = url ? std::string(url->encoded_host()) : "(not a URL)";
            return result<timed_credentials>(unavailable(
                "container: AWS_CONTAINER_CREDENTIALS_FULL_URI names host " + printable(host, 100) +
                ", but only loopback (127.0.0.0/8, ::1, localhost), 169.254.170.2, "
                "169.254.170.23 and fd00:ec2::23 are allowed over http or https"));
        }
        req.url = *full;
    } else {
        missing =
            "neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor "
            "AWS_CONTAINER_CREDENTIALS_FULL_URI is set";
        return std::nullopt;
    }
    // The token file is read on every call: EKS Pod Identity rotates it.
    std::optional<std::string> token;
    if (auto file = env_var(io, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")) {
        auto text = io.read_file(*file);
        if (!text) {
            return result<timed_credentials>(unavailable(
                "container: cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE " + *file));
        }
        token = std::string(trim(*text));
    } else if (auto value = env_var(io, "AWS_CONTAINER_AUTHORIZATION_TOKEN")) {
        token = *value;
    }
    if (token) {
        // Checked like botocore: a CR or LF would split the request into two.
        if (token->find_first_of("\r\n") != std::string::npos) {
            return result<timed_credentials>(
                unavailable("container: the authorization token is not a legal header value"));
        }
        req.headers.push_back({"Authorization", *token});
    }
    req.headers.push_back({"Accept", "application/json"});
    auto resp = io.fetch(req);
    if (!resp) {
        return result<timed_credentials>(unavailable(
            "container: no answer from the credentials endpoint: " + resp.error().message));
    }
    if (resp->status != 200) {
        return result<timed_credentials>(unavailable(
            "container: the credentials endpoint answered HTTP " + std::to_string(resp->status)));
    }
    auto got = parse_credentials_json(resp->body);
    if (!got) return result<timed_credentials>(prefixed("container", got.error()));
    got->source = "container";
    return got;
}

provider_result imds_provider(const provider_io& io, std::string& missing) {
    if (auto off = env_var(io, "AWS_EC2_METADATA_DISABLED"); off && lower(*off) == "true") {
        missing = "AWS_EC2_METADATA_DISABLED is true";
        return std::nullopt;
    }
    std::string endpoint = "http://169.254.169.254";
    if (auto ep = env_var(io, "AWS_EC2_METADATA_SERVICE_ENDPOINT")) {
        endpoint = *ep;
    } else if (auto mode = env_var(io, "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
               mode && lower(*mode) == "ipv6") {
        endpoint = "http://[fd00:ec2::254]";
    }
    while (endpoint.ends_with('/')) endpoint.pop_back();

    // IMDSv2 only: no fallback to v1 (no token), which any SSRF could reach.
    auto token = io.fetch({"PUT",
                           endpoint + "/latest/api/token",
                           {{"X-aws-ec2-metadata-token-ttl-seconds", "21600"}},
                           ""});
    if (!token) {
        // Nobody answered: not on EC2. Not an error, there is just nothing here.
        missing = "no answer from IMDS at " + endpoint + " (" + token.error().message + ")";
        return std::nullopt;
    }
    if (token->status != 200) {
        return result<timed_credentials>(unavailable("imds: PUT /latest/api/token answered HTTP " +
                                                     std::to_string(token->status)));
    }
    const std::string session(trim(token->body));
    if (session.empty())
        return result<timed_credentials>(unavailable("imds: the IMDSv2 token is empty"));
    const std::string base = endpoint + "/latest/meta-data/iam/security-credentials/";
    const std::vector<header> with_token = {{"X-aws-ec2-metadata-token", session}};

    auto roles = io.fetch({"GET", base, with_token, ""});
    if (!roles) {
        return result<timed_credentials>(
            unavailable("imds: no answer for the IAM role name: " + roles.error().message));
    }
    // An instance without an instance profile: botocore finds no credentials and moves on.
    if (roles->status == 404) {
        missing = "no IAM role is attached to this EC2 instance";
        return std::nullopt;
    }
    if (roles->status != 200) {
        return result<timed_credentials>(unavailable("imds: GET " + base.substr(endpoint.size()) +
                                                     " answered HTTP " +
                                                     std::to_string(roles->status)));
    }
    const std::string role(trim(std::string_view(roles->body).substr(0, roles->body.find('\n'))));
    if (role.empty()) {
        missing = "no IAM role is attached to this EC2 instance";
        return std::nullopt;
    }
    auto creds = io.fetch({"GET", base + role, with_token, ""});
    if (!creds) {
        return result<timed_credentials>(
            unavailable("imds: no answer for the credentials of role " + printable(role, 64) +
                        ": " + creds.error().message));
    }
    if (creds->status != 200) {
        return result<timed_credentials>(unavailable("imds: the credentials of role " +
                                                     printable(role, 64) + " answered HTTP " +
                                                     std::to_string(creds->status)));
    }
    auto got = parse_credentials_json(creds->body);
    if (!got)
        return result<timed_credentials>(
            prefixed("imds: role " + printable(role, 64), got.error()));
    got->source = "imds";
    return got;
}

}  // namespace

provider_result from_environment(const provider_io& io) {
    std::string missing;
    return environment_provider(io, missing);
}

provider_result from_web_identity(const provider_io& io, std::string_view region) {
    std::string missing;
    return web_identity_provider(io, region, missing);
}

provider_result from_profile(const provider_io& io,
                             std::string_view region,
                             std::string_view profile) {
    std::string missing;
    return profile_provider(io, region, profile, missing);
}

provider_result from_container(const provider_io& io) {
    std::string missing;
    return container_provider(io, missing);
}

provider_result from_imds(const provider_io& io) {
    std::string missing;
    return imds_provider(io, missing);
}

result<timed_credentials> resolve_credentials(const provider_io& io,
                                              std::string_view region,
                                              std::string_view pinned,
                                              std::string_view profile) {
    std::string missing;
    auto run = [&](std::string_view source) -> std::optional<provider_result> {
        if (source == "environment") return environment_provider(io, missing);
        if (source == "web-identity") return web_identity_provider(io, region, missing);
        if (source == "profile") return profile_provider(io, region, profile, missing);
        if (source == "container") return container_provider(io, missing);
        if (source == "imds") return imds_provider(io, missing);
        return std::nullopt;
    };
    if (!pinned.empty()) {
        auto got = run(pinned);
        if (!got) return unavailable("unknown credentials.source " + std::string(pinned));
        if (!*got) {
            return unavailable("credentials.source " + std::string(pinned) +
                               " is not configured: " + missing);
        }
        return std::move(**got);
    }
    // The first source that is configured decides, even when it fails: falling through to the
    // next would quietly sign with credentials nobody meant the gateway to use.
    for (auto source : {"environment", "web-identity", "profile", "container", "imds"}) {
        if (auto got = *run(source)) return std::move(*got);
    }
    const std::string name = !profile.empty() ? std::string(profile) : profile_name(io.env);
    return unavailable("no AWS credentials found: tried environment, web identity, profile " +
                       name + ", container, IMDS");
}

bool container_host_allowed(std::string_view url) {
    auto u = boost::urls::parse_uri(url);
    if (!u || (u->scheme() != "http" && u->scheme() != "https") || !u->has_authority())
        return false;
    switch (u->host_type()) {
        case boost::urls::host_type::ipv4: {
            const auto a = u->host_ipv4_address().to_uint();
            return (a >> 24) == 127 || a == 0xA9FEAA02u /* 169.254.170.2 */ ||
                   a == 0xA9FEAA17u /* 169.254.170.23 */;
        }
        case boost::urls::host_type::ipv6: {
            const auto a = u->host_ipv6_address();
            if (a.is_loopback()) return true;
            const auto b = a.to_bytes();
            // ::ffff:127.x.y.z is loopback too.
            if (a.is_v4_mapped()) return b[12] == 127;
            // fd00:ec2::23, the EKS Pod Identity agent over IPv6.
            constexpr boost::urls::ipv6_address::bytes_type eks = {
                0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x23};
            return b == eks;
        }
        case boost::urls::host_type::name:
            // No DNS here (pure code): only the literal name, as localhost always is loopback.
            return lower(u->encoded_host()) == "localhost";
        default:
            return false;
    }
}

}  // namespace bgw::aws
