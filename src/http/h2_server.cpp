// The definitions behind bgw/http/h2_server.hpp (its comment says what they are for).

#include "bgw/http/h2_server.hpp"

#include "bgw/http/headers.hpp"

#include <algorithm>
#include <array>
#include <string>
#include <utility>

#include <boost/beast/http/verb.hpp>
#include <nghttp2/nghttp2.h>

namespace bgw::http {

namespace bh = boost::beast::http;

struct h2_server::stream_state {
    std::int32_t id = 0;
    h2_request req;
    std::size_t header_bytes = 0;
    std::size_t header_count = 0;
    bool has_authority = false;
    std::size_t reserved = 0;      ///< body bytes held against the gateway-wide bound
    std::optional<error> refusal;  ///< found while the request arrived
    bool refusal_told = false;     ///< the owner was told (it answers; the rest is dropped)
    bool request_done = false;     ///< END_STREAM from the client
    bool response_started = false;
    bool completed = false;    ///< the response's END_STREAM went out
    std::string out;           ///< body bytes queued for the client
    std::size_t out_sent = 0;  ///< of `out`, handed to the connection
    bool out_last = false;     ///< the stream ends after `out`
};

namespace {

error too_large(std::string message) {
    return {bh::status::request_header_fields_too_large, "ValidationException", std::move(message)};
}

bool is_connection_specific(std::string_view name) {
    // RFC 9113 §8.2.2: these never appear in HTTP/2; a client library resets a stream that
    // carries them.
    return iequals(name, "connection") || iequals(name, "keep-alive") ||
           iequals(name, "proxy-connection") || iequals(name, "transfer-encoding") ||
           iequals(name, "upgrade") || iequals(name, "te") || iequals(name, "host");
}

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) {
        return static_cast<char>(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    });
    return out;
}

}  // namespace

/// The nghttp2 callbacks, with the server's private state in reach.
struct h2_server::access {
    static h2_server& self(void* user) { return *static_cast<h2_server*>(user); }

    static stream_state* stream_of(nghttp2_session* session, std::int32_t id) {
        return static_cast<stream_state*>(nghttp2_session_get_stream_user_data(session, id));
    }

    static int on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
        if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
            return 0;
        auto& s = self(user);
        auto st = std::make_unique<stream_state>();
        st->id = frame->hd.stream_id;
        st->req.version(11);
        nghttp2_session_set_stream_user_data(session, st->id, st.get());
        s.streams_[st->id] = std::move(st);
        return 0;
    }

    static void refuse(stream_state& st, error why) {
        if (st.refusal) return;
        st.refusal = std::move(why);
        st.req.body().clear();
        st.req.body().shrink_to_fit();
    }

    // NOLINTNEXTLINE(readability-function-size): nghttp2_on_header_callback's own parameters
    static int on_header(nghttp2_session* session,
                         const nghttp2_frame* frame,
                         const std::uint8_t* name_bytes,
                         std::size_t name_len,
                         const std::uint8_t* value_bytes,
                         std::size_t value_len,
                         std::uint8_t /*flags*/,
                         void* user) {
        auto* st = stream_of(session, frame->hd.stream_id);
        if (!st || st->refusal) return 0;
        const h2_limits& lim = self(user).limits_;
        const std::string_view name(reinterpret_cast<const char*>(name_bytes), name_len);
        const std::string_view value(reinterpret_cast<const char*>(value_bytes), value_len);
        // Counted as an HTTP/1.1 head would count them, trailers included.
        st->header_bytes += name.size() + value.size() + 4;
        if (++st->header_count > lim.max_header_count) {
            refuse(*st, too_large("request has more header and trailer fields than "
                                  "limits.max_header_count (" +
                                  std::to_string(lim.max_header_count) + ")"));
            return 0;
        }
        if (st->header_bytes > lim.max_header_bytes) {
            refuse(*st, too_large("request headers exceed limits.max_header_bytes (" +
                                  std::to_string(lim.max_header_bytes) + " bytes)"));
            return 0;
        }
        if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;  // a trailer: counted, dropped
        if (name == ":method") {
            const auto verb = bh::string_to_verb(value);
            if (verb != bh::verb::unknown) {
                st->req.method(verb);
            } else {
                st->req.method_string(value);
            }
        } else if (name == ":path") {
            if (value.size() > lim.max_target_bytes) {
                refuse(*st, {bh::status::uri_too_long, "ValidationException",
                             "request target exceeds limits.max_target_bytes (" +
                                 std::to_string(lim.max_target_bytes) + " bytes)"});
                return 0;
            }
            st->req.target(value);
        } else if (name == ":authority") {
            st->has_authority = true;
            st->req.set(bh::field::host, value);
        } else if (name.starts_with(':')) {
            return 0;  // :scheme (nghttp2 has checked the pseudo-header set)
        } else if (name == "host") {
            if (!st->has_authority) st->req.set(bh::field::host, value);
        } else {
            st->req.insert(name, value);
        }
        return 0;
    }

    static int on_data_chunk(nghttp2_session* session,
                             std::uint8_t /*flags*/,
                             std::int32_t id,
                             const std::uint8_t* data,
                             std::size_t len,
                             void* user) {
        auto* st = stream_of(session, id);
        if (!st || st->refusal) return 0;
        auto& s = self(user);
        auto& body = st->req.body();
        if (body.size() + len > s.limits_.max_body_bytes) {
            refuse(*st, {bh::status::payload_too_large, "ValidationException",
                         "request body exceeds limits.max_body_bytes (" +
                             std::to_string(s.limits_.max_body_bytes) + " bytes)"});
            s.events_.release_body(std::exchange(st->reserved, 0));
            return 0;
        }
        if (!s.events_.reserve_body(len)) {
            refuse(*st, {bh::status::service_unavailable, "ServiceUnavailableException",
                         "the gateway already holds limits.max_inflight_body_bytes of request "
                         "bodies; retry shortly"});
            s.events_.release_body(std::exchange(st->reserved, 0));
            return 0;
        }
        st->reserved += len;
        body.append(reinterpret_cast<const char*>(data), len);
        return 0;
    }

    static void tell_refusal(h2_server& s, stream_state& st) {
        if (!st.refusal || st.refusal_told) return;
        st.refusal_told = true;
        s.events_.on_refused(st.id, *st.refusal, st.req);
    }

    static int on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
        auto& s = self(user);
        if (frame->hd.type == NGHTTP2_RST_STREAM && !s.take_reset_token()) {
            // Rapid reset: each reset stream cost the gateway a request started for nothing.
            s.calm_down_ = true;
            nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
            return 0;
        }
        if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
        auto* st = stream_of(session, frame->hd.stream_id);
        if (!st) return 0;
        if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST &&
            !st->refusal) {
            if (auto no = s.events_.check_head(st->id, st->req)) refuse(*st, std::move(*no));
        }
        tell_refusal(s, *st);
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) return 0;
        st->request_done = true;
        if (!st->refusal) s.events_.on_request(st->id, st->req);
        return 0;
    }

    static int on_frame_send(nghttp2_session* session, const nghttp2_frame* frame, void*) {
        if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) return 0;
        auto* st = stream_of(session, frame->hd.stream_id);
        if (!st) return 0;
        st->completed = true;
        // The answer is whole; a request still arriving (refused early) is not wanted.
        if (!st->request_done)
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
        return 0;
    }

    static int on_stream_close(nghttp2_session* /*session*/,
                               std::int32_t id,
                               std::uint32_t code,
                               void* user) {
        auto& s = self(user);
        auto it = s.streams_.find(id);
        if (it == s.streams_.end()) return 0;
        const std::unique_ptr<stream_state> st = std::move(it->second);
        s.streams_.erase(it);
        s.events_.release_body(st->reserved);
        s.events_.on_closed(id, st->completed, code);
        return 0;
    }

    // NOLINTNEXTLINE(readability-function-size): nghttp2_data_source_read_callback's parameters
    static ssize_t read_body(nghttp2_session* session,
                             std::int32_t id,
                             std::uint8_t* buf,
                             std::size_t length,
                             std::uint32_t* flags,
                             nghttp2_data_source* /*source*/,
                             void* user) {
        auto* st = stream_of(session, id);
        if (!st) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        const std::size_t n = std::min(length, st->out.size() - st->out_sent);
        std::copy_n(st->out.data() + st->out_sent, n, buf);
        st->out_sent += n;
        if (st->out_sent == st->out.size()) {
            st->out.clear();
            st->out_sent = 0;
            if (st->out_last) {
                *flags |= NGHTTP2_DATA_FLAG_EOF;
            } else {
                if (n == 0) return NGHTTP2_ERR_DEFERRED;
                self(user).events_.on_drained(id);
            }
        }
        return static_cast<ssize_t>(n);
    }
};

h2_server::h2_server(const h2_limits& limits, h2_events& events, clock::time_point (*now)())
    : limits_(limits),
      events_(events),
      now_(now),
      reset_tokens_(static_cast<double>(limits.reset_burst)),
      refilled_(now()) {
    nghttp2_session_callbacks* cb = nullptr;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, access::on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, access::on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, access::on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, access::on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, access::on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, access::on_stream_close);
    nghttp2_option* opt = nullptr;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_closed_streams(opt, 1);
    // The library's own guard stays as a backstop behind the gateway's (which says why).
    nghttp2_option_set_stream_reset_rate_limit(
        opt, std::max<std::uint64_t>(1000, 4 * limits_.reset_burst),
        std::max<std::uint64_t>(33, 4 * limits_.reset_rate));
    nghttp2_option_set_max_continuations(opt, 8);
    nghttp2_option_set_max_outbound_ack(opt, 100);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_session_server_new2(&session_, cb, this, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);

    // HPACK counts 32 bytes more per field than the gateway's own count does.
    const auto list_size = limits_.max_header_bytes + 32 * limits_.max_header_count;
    const std::array<nghttp2_settings_entry, 3> settings{{
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
         static_cast<std::uint32_t>(limits_.max_concurrent_streams)},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<std::uint32_t>(list_size)},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 256 * 1024},
    }};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(), settings.size());
    // Request bodies of several streams arrive at once without waiting on window updates.
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, 1024 * 1024);
}

h2_server::~h2_server() {
    // Deleting the session calls no stream-close callback: the owner is told here instead.
    for (auto& [id, st] : streams_) events_.release_body(st->reserved);
    nghttp2_session_del(session_);
}

h2_server::stream_state* h2_server::find(std::int32_t stream) const {
    auto it = streams_.find(stream);
    return it == streams_.end() ? nullptr : it->second.get();
}

bool h2_server::take_reset_token() {
    const auto t = now_();
    const double elapsed = std::chrono::duration<double>(t - refilled_).count();
    refilled_ = t;
    reset_tokens_ = std::min(static_cast<double>(limits_.reset_burst),
                             reset_tokens_ + elapsed * static_cast<double>(limits_.reset_rate));
    if (reset_tokens_ < 1.0) return false;
    reset_tokens_ -= 1.0;
    return true;
}

bool h2_server::feed(std::string_view bytes) {
    const auto n = nghttp2_session_mem_recv(
        session_, reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    if (n < 0) {
        failure_ = nghttp2_strerror(static_cast<int>(n));
        // A protocol error leaves a GOAWAY queued (nghttp2 does for most); make sure of one.
        if (n != NGHTTP2_ERR_CALLBACK_FAILURE)
            nghttp2_session_terminate_session(session_, n == NGHTTP2_ERR_FLOODED
                                                            ? NGHTTP2_ENHANCE_YOUR_CALM
                                                            : NGHTTP2_PROTOCOL_ERROR);
        return false;
    }
    if (calm_down_) {
        failure_ = "the client reset streams faster than " + std::to_string(limits_.reset_rate) +
                   " a second (after a burst of " + std::to_string(limits_.reset_burst) +
                   "): rapid reset";
        return false;
    }
    return true;
}

bool h2_server::take_output(std::string& out, std::size_t max) {
    bool any = false;
    while (out.size() < max) {
        const std::uint8_t* data = nullptr;
        const auto n = nghttp2_session_mem_send(session_, &data);
        if (n <= 0) {
            if (n < 0) failure_ = nghttp2_strerror(static_cast<int>(n));
            break;
        }
        out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
        any = true;
    }
    return any;
}

bool h2_server::want_read() const { return nghttp2_session_want_read(session_) != 0; }
bool h2_server::want_write() const { return nghttp2_session_want_write(session_) != 0; }

bool h2_server::respond(std::int32_t stream,
                        unsigned status,
                        const std::vector<h2_field>& fields,
                        bool has_body) {
    auto* st = find(stream);
    if (!st || st->response_started) return false;
    std::vector<std::string> names;
    names.reserve(fields.size());
    std::vector<nghttp2_nv> nv;
    nv.reserve(fields.size() + 1);
    const std::string code = std::to_string(status);
    auto add = [&nv](const std::string& name, const std::string& value) {
        nv.push_back({reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
                      reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(),
                      value.size(), NGHTTP2_NV_FLAG_NONE});
    };
    static const std::string status_name = ":status";
    add(status_name, code);
    for (const auto& f : fields) {
        if (is_connection_specific(f.name)) continue;
        names.push_back(lower(f.name));
        add(names.back(), f.value);
    }
    nghttp2_data_provider provider{};
    provider.read_callback = access::read_body;
    const int rv = nghttp2_submit_response(session_, stream, nv.data(), nv.size(),
                                           has_body ? &provider : nullptr);
    if (rv != 0) return false;
    st->response_started = true;
    return true;
}

bool h2_server::send_data(std::int32_t stream, std::string_view bytes, bool last) {
    auto* st = find(stream);
    if (!st || !st->response_started || st->out_last) return false;
    if (st->out_sent > 0) {
        st->out.erase(0, st->out_sent);
        st->out_sent = 0;
    }
    st->out.append(bytes);
    st->out_last = last;
    nghttp2_session_resume_data(session_, stream);
    return true;
}

std::size_t h2_server::queued(std::int32_t stream) const {
    const auto* st = find(stream);
    return st ? st->out.size() - st->out_sent : 0;
}

void h2_server::reset(std::int32_t stream, std::uint32_t code) {
    if (find(stream)) nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream, code);
}

void h2_server::go_away(std::uint32_t code, std::string_view why) {
    if (streams_.empty()) {
        nghttp2_session_terminate_session(session_, code);
        return;
    }
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(session_), code,
                          reinterpret_cast<const std::uint8_t*>(why.data()), why.size());
}

}  // namespace bgw::http
