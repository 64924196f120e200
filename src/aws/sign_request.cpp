#include "bgw/aws/sign_request.hpp"

#include <algorithm>
#include <cctype>
#include <string>

namespace bgw::aws {

namespace {

/// `lower_name` is lower case already.
std::vector<header>::iterator find(std::vector<header>& headers, std::string_view lower_name) {
    return std::find_if(headers.begin(), headers.end(), [lower_name](const header& h) {
        return std::equal(
            h.name.begin(), h.name.end(), lower_name.begin(), lower_name.end(),
            [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; });
    });
}

}  // namespace

std::vector<header> sign_request(std::vector<header>& headers,
                                 const request_to_sign& r,
                                 const credentials& creds,
                                 signing_key_cache* cache) {
    const bool s3 = r.service == "s3";
    auto first_added = static_cast<std::ptrdiff_t>(headers.size());

    if (!creds.session_token.empty() && find(headers, "x-amz-security-token") == headers.end())
        headers.push_back({"X-Amz-Security-Token", creds.session_token});

    auto when = r.time;
    if (auto date = find(headers, "x-amz-date"); date != headers.end()) {
        if (auto parsed = parse_amz_date(date->value)) {
            when = *parsed;
        } else {
            headers.erase(date);
            --first_added;
            headers.push_back({"X-Amz-Date", format_amz_date(when)});
        }
    } else {
        headers.push_back({"X-Amz-Date", format_amz_date(when)});
    }

    std::string payload_sha256;
    if (auto declared = find(headers, "x-amz-content-sha256"); s3 && declared != headers.end()) {
        payload_sha256 = declared->value;
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
