#include "bgw/routing/upstream_request.hpp"

#include "bgw/aws/sign_request.hpp"
#include "bgw/http/headers.hpp"
#include "bgw/util/json.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace bgw::routing {

upstream_request prepare_upstream_request(boost::beast::http::verb method,
                                          const runtime_request& req,
                                          const boost::beast::http::fields& incoming,
                                          std::string_view body,
                                          const upstream_target& to,
                                          const upstream_signer& signer) {
    const std::string_view service_tier = to.service_tier;
    upstream_request out{method, req.wire_path, {}};
    if (!req.query.empty()) out.target += "?" + req.query;

    out.headers.push_back({"Host", to.endpoint.host_header});
    for (const auto& field : incoming) {
        std::string_view name = field.name_string();
        if (!service_tier.empty() && http::iequals(name, "x-amzn-bedrock-service-tier")) continue;
        if (http::forward_request_header(name) && http::is_safe_header_value(field.value())) {
            out.headers.push_back({std::string(name), std::string(field.value())});
        }
    }
    if (!service_tier.empty())
        out.headers.push_back({"X-Amzn-Bedrock-Service-Tier", std::string(service_tier)});
    if (!signer.bearer_token.empty()) {
        out.headers.push_back({"Authorization", "Bearer " + std::string(signer.bearer_token)});
        return out;
    }
    aws::sign_request(out.headers,
                      {.method = boost::beast::http::to_string(method),
                       .wire_path = req.wire_path,
                       .query = req.query,
                       .body = body,
                       .region = to.region,
                       .service = "bedrock",
                       .time = signer.now},
                      signer.creds, signer.cache);
    return out;
}

std::optional<std::string> with_converse_service_tier(std::string_view body,
                                                      std::string_view tier) {
    rapidjson::Document doc;
    bgw::util::parse_json(doc, std::string_view(body.data(), body.size()));
    if (doc.HasParseError() || !doc.IsObject()) return std::nullopt;
    auto& a = doc.GetAllocator();
    rapidjson::Value value(rapidjson::kObjectType);
    value.AddMember(
        "type", rapidjson::Value(tier.data(), static_cast<rapidjson::SizeType>(tier.size()), a), a);
    if (auto it = doc.FindMember("serviceTier"); it != doc.MemberEnd()) {
        it->value = std::move(value);
    } else {
        doc.AddMember("serviceTier", std::move(value), a);
    }
    rapidjson::StringBuffer buf;
    rapidjson::Writer<rapidjson::StringBuffer> w(buf);
    doc.Accept(w);
    return std::string(buf.GetString(), buf.GetSize());
}

std::string wire_head(const upstream_request& r, std::size_t body_size) {
    const auto method = boost::beast::http::to_string(r.method);
    const bool sized = body_size > 0 || r.method == boost::beast::http::verb::post ||
                       r.method == boost::beast::http::verb::put ||
                       r.method == boost::beast::http::verb::patch;
    const std::string length = sized ? std::to_string(body_size) : std::string();
    std::size_t n = method.size() + 1 + r.target.size() + 11 + 2;
    for (const auto& h : r.headers) n += h.name.size() + 2 + h.value.size() + 2;
    if (sized) n += 16 + length.size() + 2;
    std::string head;
    head.reserve(n);
    head.append(method.data(), method.size()).append(" ").append(r.target).append(" HTTP/1.1\r\n");
    for (const auto& h : r.headers) head.append(h.name).append(": ").append(h.value).append("\r\n");
    if (sized) head.append("Content-Length: ").append(length).append("\r\n");
    head.append("\r\n");
    return head;
}

}  // namespace bgw::routing
