// 3. Profile: the shared config and credentials files, with static keys, credential_process,
// a web identity token file, or role_arn + source_profile chains (STS AssumeRole).

#include "bgw/aws/credentials/common.hpp"
#include "bgw/aws/credentials/credentials_json.hpp"
#include "bgw/aws/credentials/ini.hpp"
#include "bgw/aws/credentials/providers.hpp"
#include "bgw/aws/credentials/sts.hpp"

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

namespace bgw::aws::cred {
namespace {

// --- The shared config and credentials files ---------------------------------------------------

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

/// The profile a config-file section holds: `[default]` and `[profile NAME]` (NAME possibly
/// quoted); empty for the others (sso-session, services, or a bare `[NAME]`), which are no
/// profiles, as in botocore.
std::string config_section_profile(const std::string& name) {
    if (name == "default") return name;
    if (!name.starts_with("profile") || name.size() <= 7 || (name[7] != ' ' && name[7] != '\t'))
        return {};
    std::string_view rest = trim(std::string_view(name).substr(7));
    if (rest.size() >= 2 && rest.front() == '"' && rest.back() == '"')
        rest = rest.substr(1, rest.size() - 2);
    return std::string(rest);
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
    auto config_text = store.config_path.empty() ? std::nullopt : io.read_file(store.config_path);
    if (config_text) {
        for (auto& [name, keys] : parse_ini(*config_text)) {
            const std::string profile = config_section_profile(name);
            if (profile.empty()) continue;
            for (auto& [k, v] : keys) store.profiles[profile].config[k] = v;
        }
    }
    auto creds_text = store.creds_path.empty() ? std::nullopt : io.read_file(store.creds_path);
    if (creds_text) {
        for (auto& [name, keys] : parse_ini(*creds_text)) store.profiles[name].creds = keys;
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

}  // namespace

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

}  // namespace bgw::aws::cred
