#include "bgw/http/front_parser.hpp"

#include "bgw/http/headers.hpp"

#include <optional>
#include <string_view>
#include <vector>

namespace bgw::http {
namespace {

namespace bh = boost::beast::http;
using boost::beast::error_code;
using boost::beast::string_view;

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

/// The elements of a comma-separated list (RFC 9110 §5.6.1), empty ones left out.
void split_list(std::string_view value, std::vector<std::string_view>& out) {
    while (!value.empty()) {
        const auto comma = value.find(',');
        const auto item = trim(value.substr(0, comma));
        if (!item.empty()) out.push_back(item);
        if (comma == std::string_view::npos) break;
        value.remove_prefix(comma + 1);
    }
}

error too_large(std::string message) {
    return {bh::status::request_header_fields_too_large, "ValidationException", std::move(message)};
}

/// What is wrong with a request's Transfer-Encoding `codings` (RFC 9112 §6.1), if anything.
std::optional<error> transfer_coding_error(unsigned version,
                                           bool has_content_length,
                                           const std::vector<std::string_view>& codings) {
    std::size_t chunked = 0;
    for (auto c : codings) chunked += iequals(c, "chunked") ? 1 : 0;
    if (version < 11)
        return validation_error("Transfer-Encoding is not allowed in an HTTP/1.0 request");
    if (has_content_length) {
        return validation_error(
            "a request must not have both Transfer-Encoding and Content-Length");
    }
    if (codings.empty() || !iequals(codings.back(), "chunked")) {
        return validation_error("a request's Transfer-Encoding must end with chunked");
    }
    if (chunked > 1)
        return validation_error("a request's Transfer-Encoding must apply chunked once");
    if (codings.size() > 1) {
        return error{bh::status::not_implemented, "NotImplementedException",
                     "the gateway decodes no transfer coding but chunked"};
    }
    return std::nullopt;
}

}  // namespace

front_parser::front_parser(const front_limits& limits) : limits_(limits) {
    header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
    body_limit(static_cast<std::uint64_t>(limits.max_body_bytes));
}

void front_parser::refuse(error e, error_code& ec) {
    refusal_ = std::move(e);
    ec = bh::error::bad_value;  // any error stops the parse; refusal_ says what to answer
}

void front_parser::on_request_impl(
    bh::verb method, string_view method_str, string_view target, int version, error_code& ec) {
    if (target.size() > limits_.max_target_bytes) {
        return refuse({bh::status::uri_too_long, "ValidationException",
                       "request target exceeds limits.max_target_bytes (" +
                           std::to_string(limits_.max_target_bytes) + " bytes)"},
                      ec);
    }
    msg_.target(target);
    if (method != bh::verb::unknown) {
        msg_.method(method);
    } else {
        msg_.method_string(method_str);
    }
    msg_.version(static_cast<unsigned>(version));
}

void front_parser::on_response_impl(int, string_view, int, error_code& ec) {
    ec = bh::error::bad_method;  // never called for a request parser
}

void front_parser::on_field_impl(bh::field name,
                                 string_view name_string,
                                 string_view value,
                                 error_code& ec) {
    const bool trailer = is_header_done();
    if (name_string.size() > max_field_bytes || value.size() > max_field_bytes) {
        return refuse(too_large(std::string(trailer ? "a trailer" : "a header") +
                                " field's name or value exceeds " +
                                std::to_string(max_field_bytes) + " bytes"),
                      ec);
    }
    if (++fields_ > limits_.max_header_count) {
        return refuse(too_large("request has more header and trailer fields than "
                                "limits.max_header_count (" +
                                std::to_string(limits_.max_header_count) + ")"),
                      ec);
    }
    if (trailer) {
        // Counted like the head, then dropped: the body goes upstream with a Content-Length.
        extra_bytes_ += name_string.size() + value.size() + 4;
        if (extra_bytes_ > limits_.max_header_bytes) {
            return refuse(too_large("chunk extensions and trailers exceed "
                                    "limits.max_header_bytes (" +
                                    std::to_string(limits_.max_header_bytes) + " bytes)"),
                          ec);
        }
        return;
    }
    if (name == bh::field::host) ++hosts_;
    msg_.insert(name, name_string, value);
}

void front_parser::on_header_impl(error_code& ec) {
    if (hosts_ > 1 || (hosts_ == 0 && msg_.version() >= 11)) {
        return refuse(
            validation_error(hosts_ > 1 ? "request has more than one Host header field"
                                        : "an HTTP/1.1 request must have a Host header field"),
            ec);
    }
    std::vector<std::string_view> codings;
    bool has_te = false;
    std::vector<std::string> named;  // by Connection: hop-by-hop
    for (const auto& f : msg_) {
        if (f.name() == bh::field::transfer_encoding) {
            has_te = true;
            split_list(f.value(), codings);
        } else if (f.name() == bh::field::connection) {
            std::vector<std::string_view> items;
            split_list(f.value(), items);
            for (auto item : items) named.emplace_back(item);
        }
    }
    if (has_te) {
        auto bad = transfer_coding_error(
            msg_.version(), msg_.find(bh::field::content_length) != msg_.end(), codings);
        if (bad) return refuse(std::move(*bad), ec);
    }
    // Hop-by-hop by name (RFC 9110 §7.6.1); the framing fields stay for the parser's sake.
    for (const auto& n : named) {
        if (iequals(n, "connection") || iequals(n, "host") || iequals(n, "content-length") ||
            iequals(n, "transfer-encoding"))
            continue;
        msg_.erase(n);
    }
}

void front_parser::on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) {
    // Nothing is reserved for a declared length: the body grows with the bytes that arrive.
}

std::size_t front_parser::on_body_impl(string_view body, error_code&) {
    msg_.body().append(body.data(), body.size());
    return body.size();
}

void front_parser::on_chunk_header_impl(std::uint64_t, string_view extensions, error_code& ec) {
    extra_bytes_ += extensions.size();
    if (extra_bytes_ > limits_.max_header_bytes) {
        refuse(too_large("chunk extensions and trailers exceed limits.max_header_bytes (" +
                         std::to_string(limits_.max_header_bytes) + " bytes)"),
               ec);
    }
}

std::size_t front_parser::on_chunk_body_impl(std::uint64_t, string_view body, error_code&) {
    msg_.body().append(body.data(), body.size());
    return body.size();
}

void front_parser::on_finish_impl(error_code&) {}

}  // namespace bgw::http
