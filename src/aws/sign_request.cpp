#include "bgw/aws/sign_request.hpp"

#include "bgw/aws/raw_request.hpp"

#include <algorithm>
#include <string>

namespace bgw::aws {

std::vector<header> sign_request(std::vector<header>& headers,
                                 const request_to_sign& r,
                                 const credentials& creds,
                                 signing_key_cache* cache) {
    const bool s3 = r.service == "s3";
    auto first_added = static_cast<std::ptrdiff_t>(headers.size());

    if (!creds.session_token.empty() && !find_header(headers, "x-amz-security-token"))
        headers.push_back({"X-Amz-Security-Token", creds.session_token});

    auto when = r.time;
    const auto date = std::find_if(headers.begin(), headers.end(),
                                   [](const header& h) { return header_named(h, "x-amz-date"); });
    const auto parsed = date == headers.end() ? std::nullopt : parse_amz_date(date->value);
    if (parsed) {
        when = *parsed;
    } else {
        if (date != headers.end()) {  // one that does not parse is replaced
            headers.erase(date);
            --first_added;
        }
        headers.push_back({"X-Amz-Date", format_amz_date(when)});
    }

    std::string payload_sha256;
    if (auto declared = find_header(headers, "x-amz-content-sha256"); s3 && declared) {
        payload_sha256 = *declared;
    } else {
        payload_sha256 = sha256_hex(r.body);
        if (s3) headers.push_back({"x-amz-content-sha256", payload_sha256});
    }

    const signing_input in{.method = r.method,
                           .wire_path = r.wire_path,
                           .query = r.query,
                           .headers = headers,
                           .payload_sha256 = payload_sha256,
                           .region = r.region,
                           .service = r.service,
                           .time = when,
                           .normalize_path = !s3,
                           .double_encode_path = !s3};
    headers.push_back({"Authorization", sign_v4(in, creds, cache).authorization});
    return {headers.begin() + first_added, headers.end()};
}

}  // namespace bgw::aws
