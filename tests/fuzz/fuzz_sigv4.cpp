// Fuzzes the SigV4 canonical-request builder (bgw/aws/sigv4.hpp) through the test-suite request
// format (bgw/aws/raw_request.hpp), so the SigV4 suites' `.req` files are the seeds. The request
// is signed in all four path modes (normalise on/off x double-encode on/off). Invariants:
// - the canonical request has exactly 6 + (signed header count) lines: no header name or value
//   can inject a line (CR/LF are folded, names are tokens);
// - the canonical URI starts with '/' and holds only unreserved characters, '/' and %XX;
// - canonical_query is idempotent and its output holds only unreserved, '=', '&' and %XX;
// - sign_v4's Authorization parses back (parse_authorization) to the same key, scope, signed
//   headers and signature; the signature is 64 lowercase hex digits;
// - X-Amz-Date, when it parses, formats back to the same text.
#include "bgw/aws/raw_request.hpp"
#include "bgw/aws/sigv4.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

using namespace bgw::aws;

namespace {

void check(bool ok, const char* what) {
    if (!ok) {
        __builtin_printf("invariant failed: %s\n", what);
        std::abort();
    }
}

bool is_hex_upper(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); }

bool is_unreserved(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

bool encoded_only(std::string_view s, std::string_view also) {
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (is_unreserved(s[i]) || also.find(s[i]) != std::string_view::npos) continue;
        if (s[i] != '%' || i + 2 >= s.size() || !is_hex_upper(s[i + 1]) || !is_hex_upper(s[i + 2]))
            return false;
        i += 2;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto req = parse_raw_request(text);
    if (!req) {
        check(req.error().type == "ValidationException", "raw request error of another type");
        return 0;
    }

    std::chrono::sys_seconds when{std::chrono::seconds{1440938160}};  // 20150830T123600Z
    if (auto date = find_header(req->headers, "X-Amz-Date")) {
        if (auto t = parse_amz_date(*date)) {
            check(format_amz_date(*t) == *date, "X-Amz-Date does not round-trip");
            when = *t;
        }
    }
    if (auto authz = find_header(req->headers, "Authorization")) {
        if (auto p = parse_authorization(*authz)) {
            check(p->signature_hex.size() == 64 && p->date.size() == 8, "parsed authz shape");
        }
    }

    const std::string payload_hash = sha256_hex(req->body);
    const std::string query(req->query());
    const std::string cq = canonical_query(query);
    check(encoded_only(cq, "=&"), "canonical query holds unencoded bytes");
    check(canonical_query(cq) == cq, "canonical_query is not idempotent");

    const credentials creds{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", {}};
    const std::string names = signed_header_names(req->headers);
    const std::size_t signed_count =
        names.empty() ? 0
                      : 1 + static_cast<std::size_t>(std::count(names.begin(), names.end(), ';'));
    for (int mode = 0; mode < 4; ++mode) {
        signing_input in;
        in.method = req->method;
        in.wire_path = req->path();
        in.query = query;
        in.headers = req->headers;
        in.payload_sha256 = payload_hash;
        in.region = "us-east-1";
        in.service = "service";
        in.time = when;
        in.normalize_path = (mode & 1) != 0;
        in.double_encode_path = (mode & 2) != 0;

        const std::string uri = canonical_uri(in);
        check(!uri.empty() && uri.front() == '/', "canonical URI does not start with '/'");
        check(encoded_only(uri, "/"), "canonical URI holds unencoded bytes");

        const std::string creq = canonical_request(in);
        check(static_cast<std::size_t>(std::count(creq.begin(), creq.end(), '\n')) ==
                  5 + signed_count,
              "canonical request has an injected line");
        const std::string sts = string_to_sign(creq, in);
        check(std::count(sts.begin(), sts.end(), '\n') == 3, "string to sign shape");

        const signature sig = sign_v4(in, creds);
        check(sig.signed_headers == names, "signed header names differ");
        check(sig.signature_hex.size() == 64 &&
                  std::all_of(
                      sig.signature_hex.begin(), sig.signature_hex.end(),
                      [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }),
              "signature is not 64 lowercase hex digits");
        if (!names.empty()) {
            auto back = parse_authorization(sig.authorization);
            check(back.has_value(), "our own Authorization does not parse");
            check(back->access_key_id == creds.access_key_id && back->region == "us-east-1" &&
                      back->service == "service" && back->signature_hex == sig.signature_hex &&
                      back->date == format_amz_date(when).substr(0, 8),
                  "Authorization parses back to other values");
            std::string joined;
            for (const auto& n : back->signed_headers) joined += (joined.empty() ? "" : ";") + n;
            check(joined == names, "Authorization parses back to other signed headers");
        }
        if (mode == 3) {
            const std::string sreq = format_signed_request(*req, {}, sig.authorization);
            auto again = parse_raw_request(sreq);
            check(static_cast<bool>(again), "the signed request does not parse");
            check(again->method == req->method && again->target == req->target,
                  "the signed request changed its request line");
        }
    }
    return 0;
}
