#include "bgw/routing/upstream_request.hpp"

#include "bgw/http/headers.hpp"

namespace bgw::routing {

std::string choose_region(std::string_view authorization, const config::config& cfg) {
    if (auto parsed = aws::parse_authorization(authorization); parsed) {
        if (cfg.regions.contains(parsed->region)) return parsed->region;
    }
    return cfg.default_region;
}

upstream_request prepare_upstream_request(boost::beast::http::verb method,
                                          const runtime_request& req,
                                          const boost::beast::http::fields& incoming,
                                          const config::region_endpoint& endpoint,
                                          std::string_view region,
                                          std::string_view body,
                                          const aws::credentials& creds,
                                          std::chrono::sys_seconds now,
                                          aws::signing_key_cache* cache) {
    upstream_request out{method, req.wire_path, {}};
    if (!req.query.empty()) out.target += "?" + req.query;

    out.headers.push_back({"Host", endpoint.host_header});
    for (const auto& field : incoming) {
        std::string_view name = field.name_string();
        if (http::forward_request_header(name) && http::is_safe_header_value(field.value())) {
            out.headers.push_back({std::string(name), std::string(field.value())});
        }
    }
    out.headers.push_back({"X-Amz-Date", aws::format_amz_date(now)});
    if (!creds.session_token.empty()) {
        out.headers.push_back({"X-Amz-Security-Token", creds.session_token});
    }

    std::string payload_hash = aws::sha256_hex(body);
    std::string_view path = req.wire_path;
    std::string_view query = req.query;
    aws::signing_input in{.method = boost::beast::http::to_string(method),
                          .wire_path = path,
                          .query = query,
                          .headers = out.headers,
                          .payload_sha256 = payload_hash,
                          .region = region,
                          .service = "bedrock",
                          .time = now};
    aws::signature sig = aws::sign_v4(in, creds, cache);
    out.headers.push_back({"Authorization", std::move(sig.authorization)});
    return out;
}

}  // namespace bgw::routing
