// STS calls (AssumeRoleWithWebIdentity, AssumeRole), their endpoint and their answers.

#include "bgw/aws/credentials/sts.hpp"

#include "bgw/aws/credentials/common.hpp"
#include "bgw/aws/credentials/form.hpp"
#include "bgw/aws/credentials/xml.hpp"
#include "bgw/aws/sign_request.hpp"

#include <utility>
#include <vector>

#include <boost/url/parse.hpp>

namespace bgw::aws::cred {
namespace {

std::string signing_region(std::string_view region) {
    // The global endpoint signs in us-east-1.
    return region.empty() ? "us-east-1" : std::string(region);
}

result<timed_credentials> sts_exchange(const provider_io& io,
                                       const fetch_request& req,
                                       std::string_view action,
                                       std::string_view role_arn,
                                       std::string source) {
    auto resp = io.fetch(req);
    if (!resp) {
        return unavailable("STS " + std::string(action) + " for " + std::string(role_arn) +
                           ": no answer: " + resp.error().message);
    }
    auto got = parse_sts_response(resp->status, resp->body);
    if (!got) {
        return prefixed("STS " + std::string(action) + " for " + std::string(role_arn),
                        got.error());
    }
    got->source = std::move(source);
    return got;
}

}  // namespace

/// AssumeRoleWithWebIdentity: unsigned (the token is the proof), the token file read now so a
/// rotated token (EKS rotates them hourly) is always the one sent.
result<timed_credentials> web_identity_call(const provider_io& io,
                                            std::string_view region,
                                            const std::string& token_file,
                                            const std::string& role_arn,
                                            const std::string& session_name,
                                            std::string source) {
    auto token = io.read_file(token_file);
    if (!token) return unavailable("cannot read the web identity token file " + token_file);
    // A JWT has no whitespace; a trailing newline from an editor or `echo` is not part of it.
    auto jwt = trim(*token);
    if (jwt.empty()) return unavailable("the web identity token file " + token_file + " is empty");
    fetch_request req;
    req.method = "POST";
    req.url = sts_endpoint(io.env, region) + "/";
    req.headers.push_back({"Content-Type", std::string(form_content_type)});
    req.body = form({{"Action", "AssumeRoleWithWebIdentity"},
                     {"Version", "2011-06-15"},
                     {"RoleArn", role_arn},
                     {"RoleSessionName", session_name},
                     {"WebIdentityToken", std::string(jwt)}});
    return sts_exchange(io, req, "AssumeRoleWithWebIdentity", role_arn, std::move(source));
}

/// AssumeRole, signed (SigV4, service sts) with the source profile's credentials.
result<timed_credentials> assume_role_call(const provider_io& io,
                                           std::string_view region,
                                           const credentials& source_creds,
                                           const assume_role_params& p,
                                           std::string source) {
    std::vector<std::pair<std::string, std::string>> fields = {{"Action", "AssumeRole"},
                                                               {"Version", "2011-06-15"},
                                                               {"RoleArn", p.role_arn},
                                                               {"RoleSessionName", p.session_name}};
    if (p.external_id) fields.emplace_back("ExternalId", *p.external_id);
    if (p.duration_seconds) fields.emplace_back("DurationSeconds", *p.duration_seconds);

    fetch_request req;
    req.method = "POST";
    req.url = sts_endpoint(io.env, region) + "/";
    req.body = form(fields);
    auto url = boost::urls::parse_uri(req.url);
    if (!url || !url->has_authority())
        return unavailable("the STS endpoint " + printable(req.url) + " is not a URL");
    const auto now = io.now();
    // Host is signed, so it must be byte for byte what the shell sends: the URL's authority.
    req.headers = {{"Host", std::string(url->encoded_host_and_port())},
                   {"Content-Type", std::string(form_content_type)}};
    const std::string path = url->encoded_path().empty() ? "/" : std::string(url->encoded_path());
    const std::string sign_region = signing_region(region);
    sign_request(req.headers,
                 {.method = req.method,
                  .wire_path = path,
                  .query = url->encoded_query(),
                  .body = req.body,
                  .region = sign_region,
                  .service = "sts",
                  .time = now},
                 source_creds);
    return sts_exchange(io, req, "AssumeRole", p.role_arn, std::move(source));
}

}  // namespace bgw::aws::cred

namespace bgw::aws {

using cred::printable;
using cred::unavailable;
using cred::xml_element;
using cred::xml_text;

std::string sts_endpoint(const env_lookup& env, std::string_view region) {
    if (auto custom = env("AWS_ENDPOINT_URL_STS"); custom && !custom->empty()) {
        std::string ep = *custom;
        while (ep.ends_with('/')) ep.pop_back();
        return ep;
    }
    // No region: the global endpoint, as the SDKs do.
    if (region.empty()) return "https://sts.amazonaws.com";
    // China regions live in their own DNS zone.
    if (region.starts_with("cn-"))
        return "https://sts." + std::string(region) + ".amazonaws.com.cn";
    return "https://sts." + std::string(region) + ".amazonaws.com";
}

result<timed_credentials> parse_sts_response(unsigned status, std::string_view xml) {
    if (status < 200 || status > 299) {
        std::string message = "STS answered HTTP " + std::to_string(status);
        auto err = xml_element(xml, "Error").value_or(xml);
        if (auto code = xml_text(err, "Code")) message += ": " + printable(*code, 100);
        if (auto text = xml_text(err, "Message")) message += ": " + printable(*text);
        return unavailable(std::move(message));
    }
    auto block = xml_element(xml, "Credentials");
    if (!block) return unavailable("the STS answer has no <Credentials>");
    timed_credentials out;
    auto id = xml_text(*block, "AccessKeyId");
    auto secret = xml_text(*block, "SecretAccessKey");
    auto token = xml_text(*block, "SessionToken");
    auto exp = xml_text(*block, "Expiration");
    if (!id || id->empty()) return unavailable("the STS answer has no <AccessKeyId>");
    if (!secret || secret->empty()) return unavailable("the STS answer has no <SecretAccessKey>");
    if (!token || token->empty()) return unavailable("the STS answer has no <SessionToken>");
    if (!exp) return unavailable("the STS answer has no <Expiration>");
    out.expiration = parse_iso8601(*exp);
    if (!out.expiration) return unavailable("the STS answer has an unreadable <Expiration>");
    out.creds = {std::move(*id), std::move(*secret), std::move(*token)};
    return out;
}

}  // namespace bgw::aws
