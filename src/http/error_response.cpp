#include "bgw/http/error_response.hpp"

#include "bgw/http/retry_after.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace bgw::http {

namespace beast_http = boost::beast::http;

std::string error_body(std::string_view message) {
    rapidjson::StringBuffer buf;
    rapidjson::Writer<rapidjson::StringBuffer> w(buf);
    w.StartObject();
    w.Key("message");
    w.String(message.data(), static_cast<rapidjson::SizeType>(message.size()));
    w.EndObject();
    return std::string(buf.GetString(), buf.GetSize());
}

beast_http::response<beast_http::string_body> make_error_response(const error& e,
                                                                  std::string_view request_id,
                                                                  unsigned version,
                                                                  bool keep_alive) {
    beast_http::response<beast_http::string_body> res{e.status, version};
    res.set(beast_http::field::content_type, "application/json");
    res.set("x-amzn-ErrorType", e.type);
    res.set("x-amzn-RequestId", request_id);
    res.body() = error_body(e.message);
    res.keep_alive(keep_alive);
    res.prepare_payload();
    return res;
}

beast_http::response<beast_http::string_body> make_throttle_response(std::chrono::milliseconds wait,
                                                                     std::string_view message,
                                                                     std::string_view request_id,
                                                                     unsigned version,
                                                                     bool keep_alive) {
    const auto after = retry_after(wait);
    rapidjson::StringBuffer buf;
    rapidjson::Writer<rapidjson::StringBuffer> w(buf);
    w.StartObject();
    w.Key("message");
    w.String(message.data(), static_cast<rapidjson::SizeType>(message.size()));
    w.Key("retryAfterSeconds");
    w.Uint64(after.seconds);
    w.EndObject();

    beast_http::response<beast_http::string_body> res{beast_http::status::too_many_requests,
                                                      version};
    res.set(beast_http::field::content_type, "application/json");
    res.set("x-amzn-ErrorType", "ThrottlingException");
    res.set("x-amzn-RequestId", request_id);
    set_retry_after(res, wait);
    res.body().assign(buf.GetString(), buf.GetSize());
    res.keep_alive(keep_alive);
    res.prepare_payload();
    return res;
}

}  // namespace bgw::http
