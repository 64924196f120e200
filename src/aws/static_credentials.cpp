#include "bgw/aws/static_credentials.hpp"

namespace bgw::aws {
namespace {

std::string_view trim(std::string_view s) {
    auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
    while (!s.empty() && ws(s.front())) s.remove_prefix(1);
    while (!s.empty() && ws(s.back())) s.remove_suffix(1);
    return s;
}

}  // namespace

std::optional<credentials> credentials_from_env(const env_lookup& env) {
    auto id = env("AWS_ACCESS_KEY_ID");
    auto secret = env("AWS_SECRET_ACCESS_KEY");
    if (!id || !secret || id->empty() || secret->empty()) return std::nullopt;
    credentials c{*id, *secret, {}};
    if (auto token = env("AWS_SESSION_TOKEN"); token) c.session_token = *token;
    return c;
}

std::optional<credentials> credentials_from_ini(std::string_view text, std::string_view profile) {
    credentials c;
    bool in_profile = false;
    while (!text.empty()) {
        auto nl = text.find('\n');
        std::string_view line = trim(text.substr(0, nl));
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        if (line.empty() || line.front() == '#' || line.front() == ';') continue;
        if (line.front() == '[') {
            auto close = line.find(']');
            in_profile =
                close != std::string_view::npos && trim(line.substr(1, close - 1)) == profile;
            continue;
        }
        if (!in_profile) continue;
        auto eq = line.find('=');
        if (eq == std::string_view::npos) continue;
        std::string_view key = trim(line.substr(0, eq));
        std::string value(trim(line.substr(eq + 1)));
        if (key == "aws_access_key_id") c.access_key_id = value;
        if (key == "aws_secret_access_key") c.secret_access_key = value;
        if (key == "aws_session_token") c.session_token = value;
    }
    if (c.access_key_id.empty() || c.secret_access_key.empty()) return std::nullopt;
    return c;
}

std::optional<std::string> shared_credentials_path(const env_lookup& env) {
    if (auto p = env("AWS_SHARED_CREDENTIALS_FILE"); p && !p->empty()) return *p;
    if (auto home = env("HOME"); home && !home->empty()) return *home + "/.aws/credentials";
    return std::nullopt;
}

std::string profile_name(const env_lookup& env) {
    if (auto p = env("AWS_PROFILE"); p && !p->empty()) return *p;
    return "default";
}

}  // namespace bgw::aws
