// Fuzzes the credential-response parsers (bgw/aws/credential_chain.hpp): STS XML
// (parse_sts_response), the JSON of IMDS / container endpoints / credential_process
// (parse_credentials_json), parse_iso8601, container_host_allowed, and the INI parsing and
// source_profile chains of from_profile and the IMDS exchange of from_imds, with a provider_io
// whose every answer is the fuzzer's text (no file, process or network is touched).
//
// Input: the first byte picks the parser (seeds name it: "S" STS XML, "J" JSON, "T" time,
// "U" URL, "P" profile files, "I" IMDS answers); the rest is the document. For "P" and "I" the
// rest is split at NUL bytes into the answers. Invariants:
// - accepted credentials have a non-empty key id and secret; STS ones a session token and an
//   expiration;
// - an error message about a remote answer (it is logged) holds no control character;
// - a parsed ISO 8601 time, printed back as YYYY-MM-DDTHH:MM:SSZ, parses to the same instant.
#include "bgw/aws/credential_chain.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

using namespace bgw::aws;
using namespace std::chrono;

namespace {

void check(bool ok, const char* what) {
    if (!ok) {
        __builtin_printf("invariant failed: %s\n", what);
        std::abort();
    }
}

/// Text from a remote party (STS, IMDS, a container endpoint) is logged only through
/// `printable`: an error about such an answer must not carry a control character (log forging).
/// Profile files are the operator's own, so their names are not held to this.
void check_creds(const bgw::result<timed_credentials>& r, bool sts, bool remote = true) {
    if (!r) {
        if (remote) {
            for (unsigned char c : r.error().message)
                check(c >= 0x20, "control character in an error message");
        }
        return;
    }
    check(!r->creds.access_key_id.empty(), "empty access key id accepted");
    check(!r->creds.secret_access_key.empty(), "empty secret accepted");
    if (sts) {
        check(!r->creds.session_token.empty(), "STS answer without session token accepted");
        check(r->expiration.has_value(), "STS answer without expiration accepted");
    }
}

void check_time(std::string_view s) {
    auto t = parse_iso8601(s);
    if (!t) return;
    const auto day = floor<days>(*t);
    const year_month_day ymd{day};
    const int y = static_cast<int>(ymd.year());
    if (y < 0 || y > 9999) return;
    const hh_mm_ss hms{*t - day};
    char buf[40];
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", y,
                  static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                  static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                  static_cast<int>(hms.seconds().count()));
    auto back = parse_iso8601(buf);
    check(back && *back == *t, "ISO 8601 time does not round-trip");
}

std::vector<std::string> split_nul(std::string_view s, std::size_t n) {
    std::vector<std::string> parts;
    while (parts.size() + 1 < n) {
        const auto z = s.find('\0');
        if (z == std::string_view::npos) break;
        parts.emplace_back(s.substr(0, z));
        s.remove_prefix(z + 1);
    }
    parts.emplace_back(s);
    parts.resize(n);
    return parts;
}

/// A provider_io that never leaves the process: fixed environment, files and answers from the
/// fuzzer, a fixed clock.
provider_io make_io(std::vector<std::string> env_pairs,
                    std::string config_text,
                    std::string creds_text,
                    std::vector<bgw::result<fetch_response>> answers) {
    provider_io io;
    io.env = [env_pairs](std::string_view name) -> std::optional<std::string> {
        for (std::size_t i = 0; i + 1 < env_pairs.size(); i += 2) {
            if (env_pairs[i] == name) return env_pairs[i + 1];
        }
        return std::nullopt;
    };
    io.read_file = [config_text,
                    creds_text](const std::string& path) -> std::optional<std::string> {
        if (path == "/fuzz/config") return config_text;
        if (path == "/fuzz/credentials") return creds_text;
        if (path == "/fuzz/token") return std::string("eyJhbGciOi.fuzz.token");
        return std::nullopt;
    };
    auto next = std::make_shared<std::size_t>(0);
    io.fetch = [answers, next](const fetch_request&) -> bgw::result<fetch_response> {
        if (*next >= answers.size()) return bgw::error{{}, "Fuzz", "no answer"};
        return answers[(*next)++];
    };
    io.run = [](const std::string&) -> bgw::result<std::string> {
        return std::string(R"({"Version":1,"AccessKeyId":"AKIDPROCESS","SecretAccessKey":"s"})");
    };
    io.now = [] { return sys_seconds{seconds{1440938160}}; };
    return io;
}

const char* const sts_ok =
    "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIAFUZZ</AccessKeyId>"
    "<SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken>"
    "<Expiration>2026-11-23T13:00:00Z</Expiration></Credentials></AssumeRoleResult>"
    "</AssumeRoleResponse>";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const char mode = static_cast<char>(data[0]);
    const std::string_view doc(reinterpret_cast<const char*>(data) + 1, size - 1);
    switch (mode) {
        case 'S': {
            for (unsigned status : {200u, 403u}) check_creds(parse_sts_response(status, doc), true);
            break;
        }
        case 'J':
            check_creds(parse_credentials_json(doc), false);
            break;
        case 'T':
            check_time(doc);
            break;
        case 'U':
            (void)container_host_allowed(doc);
            break;
        case 'P': {
            // config file \0 credentials file \0 profile name
            auto parts = split_nul(doc, 3);
            auto io = make_io({"AWS_CONFIG_FILE", "/fuzz/config", "AWS_SHARED_CREDENTIALS_FILE",
                               "/fuzz/credentials", "HOME", "/fuzz"},
                              parts[0], parts[1], {fetch_response{200, sts_ok}});
            auto got = from_profile(io, "us-east-1", parts[2]);
            if (got) check_creds(*got, false, false);
            break;
        }
        case 'I': {
            // token \0 role list \0 credentials JSON; the statuses are 200.
            auto parts = split_nul(doc, 3);
            auto io = make_io({}, {}, {},
                              {fetch_response{200, parts[0]}, fetch_response{200, parts[1]},
                               fetch_response{200, parts[2]}});
            auto got = from_imds(io);
            if (got) check_creds(*got, false);
            break;
        }
        default:
            // Anything else: every single-document parser on the whole input.
            check_creds(parse_sts_response(200, doc), true);
            check_creds(parse_credentials_json(doc), false);
            check_time(doc);
            break;
    }
    return 0;
}
