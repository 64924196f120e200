// JSON (credential_process, container, IMDS): one reader for the three credential documents.

#include "bgw/aws/credentials/credentials_json.hpp"

#include "bgw/aws/credentials/common.hpp"
#include "bgw/util/json.hpp"

#include <utility>

#include <rapidjson/document.h>

namespace bgw::aws::cred {
namespace {

using namespace std::chrono;

std::optional<std::string> json_string(const rapidjson::Value& obj, const char* name) {
    auto m = obj.FindMember(name);
    if (m == obj.MemberEnd() || !m->value.IsString()) return std::nullopt;
    return std::string(m->value.GetString(), m->value.GetStringLength());
}

}  // namespace

/// `require_version`: credential_process output must say "Version": 1 (its documented contract);
/// container and IMDS documents have no Version.
result<timed_credentials> credentials_json(std::string_view json, bool require_version) {
    rapidjson::Document doc;
    bgw::util::parse_json(doc, std::string_view(json.data(), json.size()));
    // Never quote the document: it holds the secret key.
    if (doc.HasParseError() || !doc.IsObject())
        return unavailable("the credentials document is not a JSON object");
    if (require_version) {
        auto v = doc.FindMember("Version");
        if (v == doc.MemberEnd()) return unavailable("the credentials JSON has no \"Version\"");
        if (!v->value.IsNumber() || v->value.GetDouble() != 1.0)
            return unavailable("the credentials JSON has an unsupported \"Version\" (only 1 is)");
    }
    // IMDS says whether the role's credentials could be made.
    if (auto code = json_string(doc, "Code"); code && *code != "Success")
        return unavailable("the credentials JSON has \"Code\": \"" + printable(*code, 64) + "\"");
    timed_credentials out;
    auto id = json_string(doc, "AccessKeyId");
    auto secret = json_string(doc, "SecretAccessKey");
    if (!id || id->empty()) return unavailable("the credentials JSON has no \"AccessKeyId\"");
    if (!secret || secret->empty())
        return unavailable("the credentials JSON has no \"SecretAccessKey\"");
    out.creds.access_key_id = std::move(*id);
    out.creds.secret_access_key = std::move(*secret);
    if (auto t = json_string(doc, "SessionToken")) {
        out.creds.session_token = std::move(*t);
    } else if (auto token = json_string(doc, "Token")) {
        out.creds.session_token = std::move(*token);
    }
    auto exp = doc.FindMember("Expiration");
    if (exp != doc.MemberEnd() && !exp->value.IsNull()) {
        std::optional<sys_seconds> when;
        if (exp->value.IsString())
            when = parse_iso8601({exp->value.GetString(), exp->value.GetStringLength()});
        // A wrong date would mean never refreshing temporary credentials: refuse it.
        if (!when) return unavailable("the credentials JSON has an unreadable \"Expiration\"");
        out.expiration = when;
    }
    return out;
}

}  // namespace bgw::aws::cred

namespace bgw::aws {

result<timed_credentials> parse_credentials_json(std::string_view json) {
    return cred::credentials_json(json, false);
}

}  // namespace bgw::aws
