// bgw::http::h2_server against a real HTTP/2 client: nghttp2's own client session, with bytes
// moved by hand between the two (no sockets). What the gateway adds on top of the library is
// checked here: request assembly, its bounds and early refusals, response framing under the
// client's flow control, and the rapid-reset guard.

#include "bgw/http/h2_server.hpp"

#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>

namespace {

using bgw::http::h2_field;
using bgw::http::h2_request;
using bgw::http::h2_server;

/// What the server told its owner.
struct recorder : bgw::http::h2_events {
    std::map<std::int32_t, h2_request> requests;
    std::map<std::int32_t, bgw::error> refused;
    std::map<std::int32_t, bool> closed;  ///< stream → completed
    std::vector<std::int32_t> drained;
    std::size_t reserved = 0;
    std::size_t budget = 1 << 30;
    std::optional<bgw::error> refuse_every_head;

    std::optional<bgw::error> check_head(std::int32_t, const h2_request&) override {
        return refuse_every_head;
    }
    bool reserve_body(std::size_t n) override {
        if (reserved + n > budget) return false;
        reserved += n;
        return true;
    }
    void release_body(std::size_t n) override { reserved -= n; }
    void on_request(std::int32_t id, h2_request& req) override { requests[id] = std::move(req); }
    void on_refused(std::int32_t id, const bgw::error& why, const h2_request&) override {
        refused[id] = why;
    }
    void on_closed(std::int32_t id, bool completed, std::uint32_t) override {
        closed[id] = completed;
    }
    void on_drained(std::int32_t id) override { drained.push_back(id); }
};

/// A client: nghttp2's client session, recording what it receives.
struct client {
    struct response {
        std::map<std::string, std::string> fields;
        std::string body;
        bool ended = false;
        std::uint32_t reset = 0;  ///< RST_STREAM code, when reset
        bool was_reset = false;
    };
    nghttp2_session* s = nullptr;
    std::map<std::int32_t, response> got;
    std::optional<std::uint32_t> goaway;

    explicit client(std::uint32_t initial_window = 65535) {
        nghttp2_session_callbacks* cb = nullptr;
        nghttp2_session_callbacks_new(&cb);
        nghttp2_session_callbacks_set_on_header_callback(
            cb, [](nghttp2_session*, const nghttp2_frame* f, const std::uint8_t* n, std::size_t nl,
                   const std::uint8_t* v, std::size_t vl, std::uint8_t, void* u) {
                static_cast<client*>(u)
                    ->got[f->hd.stream_id]
                    .fields[std::string(reinterpret_cast<const char*>(n), nl)] =
                    std::string(reinterpret_cast<const char*>(v), vl);
                return 0;
            });
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
            cb, [](nghttp2_session*, std::uint8_t, std::int32_t id, const std::uint8_t* d,
                   std::size_t len, void* u) {
                static_cast<client*>(u)->got[id].body.append(reinterpret_cast<const char*>(d), len);
                return 0;
            });
        nghttp2_session_callbacks_set_on_frame_recv_callback(
            cb, [](nghttp2_session*, const nghttp2_frame* f, void* u) {
                auto* self = static_cast<client*>(u);
                if (f->hd.type == NGHTTP2_GOAWAY) self->goaway = f->goaway.error_code;
                if (f->hd.type == NGHTTP2_RST_STREAM) {
                    self->got[f->hd.stream_id].was_reset = true;
                    self->got[f->hd.stream_id].reset = f->rst_stream.error_code;
                }
                if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
                    (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
                    self->got[f->hd.stream_id].ended = true;
                return 0;
            });
        nghttp2_session_client_new(&s, cb, this);
        nghttp2_session_callbacks_del(cb);
        nghttp2_settings_entry iv{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, initial_window};
        nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, &iv, 1);
    }
    ~client() { nghttp2_session_del(s); }
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    /// A request; `body` empty sends none (END_STREAM on the HEADERS).
    std::int32_t request(const std::string& method,
                         const std::string& path,
                         const std::string& body = "",
                         std::vector<std::pair<std::string, std::string>> extra = {}) {
        std::vector<std::pair<std::string, std::string>> h{
            {":method", method}, {":scheme", "http"}, {":authority", "gw"}, {":path", path}};
        for (auto& e : extra) h.push_back(e);
        std::vector<nghttp2_nv> nv;
        for (auto& [n, v] : h) {
            nv.push_back({reinterpret_cast<std::uint8_t*>(n.data()),
                          reinterpret_cast<std::uint8_t*>(v.data()), n.size(), v.size(),
                          NGHTTP2_NV_FLAG_NONE});
        }
        bodies.push_back(body);
        nghttp2_data_provider dp{};
        dp.source.ptr = &bodies.back();
        dp.read_callback = [](nghttp2_session*, std::int32_t, std::uint8_t* buf, std::size_t len,
                              std::uint32_t* flags, nghttp2_data_source* src, void*) -> ssize_t {
            auto& left = *static_cast<std::string*>(src->ptr);
            const std::size_t n = std::min(len, left.size());
            std::memcpy(buf, left.data(), n);
            left.erase(0, n);
            if (left.empty()) *flags |= NGHTTP2_DATA_FLAG_EOF;
            return static_cast<ssize_t>(n);
        };
        return nghttp2_submit_request(s, nullptr, nv.data(), nv.size(),
                                      body.empty() ? nullptr : &dp, this);
    }
    std::deque<std::string> bodies;  ///< what each request has left to send (stable addresses)
};

/// Moves bytes both ways until neither side has anything to send. False when the server said
/// the connection must end.
bool pump(client& c, h2_server& srv) {
    bool alive = true;
    for (int round = 0; round < 1000; ++round) {
        std::string to_server;
        for (;;) {
            const std::uint8_t* data = nullptr;
            const auto n = nghttp2_session_mem_send(c.s, &data);
            if (n <= 0) break;
            to_server.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
        }
        if (!to_server.empty() && alive) alive = srv.feed(to_server);
        std::string to_client;
        srv.take_output(to_client, 1 << 20);
        if (!to_client.empty()) {
            nghttp2_session_mem_recv(c.s, reinterpret_cast<const std::uint8_t*>(to_client.data()),
                                     to_client.size());
        }
        if (to_server.empty() && to_client.empty()) break;
    }
    return alive;
}

bgw::http::h2_limits small_limits() {
    bgw::http::h2_limits l;
    l.max_concurrent_streams = 8;
    l.max_header_bytes = 2048;
    l.max_header_count = 20;
    l.max_target_bytes = 256;
    l.max_body_bytes = 1000;
    return l;
}

TEST(h2_server, a_request_arrives_as_the_message_an_http1_read_makes_and_is_answered) {
    recorder r;
    h2_server srv(small_limits(), r);
    client c;
    const auto id = c.request("POST", "/model/m/converse", R"({"messages":[]})",
                              {{"content-type", "application/json"}, {"x-api-key", "k"}});
    ASSERT_TRUE(pump(c, srv));
    ASSERT_EQ(r.requests.count(id), 1u);
    const auto& req = r.requests[id];
    EXPECT_EQ(req.method(), boost::beast::http::verb::post);
    EXPECT_EQ(req.target(), "/model/m/converse");
    EXPECT_EQ(req[boost::beast::http::field::host], "gw");  // from :authority
    EXPECT_EQ(req["x-api-key"], "k");
    EXPECT_EQ(req.body(), R"({"messages":[]})");
    EXPECT_EQ(r.reserved, req.body().size());  // held until the stream closes

    // Connection-specific fields never go out on HTTP/2; names go lowercase.
    ASSERT_TRUE(srv.respond(id, 200,
                            {{"Content-Type", "application/json"},
                             {"Connection", "close"},
                             {"Transfer-Encoding", "chunked"},
                             {"X-Gateway-Region", "us-east-1"}},
                            true));
    ASSERT_TRUE(srv.send_data(id, "{\"ok\":", false));
    ASSERT_TRUE(pump(c, srv));
    ASSERT_TRUE(srv.send_data(id, "true}", true));
    ASSERT_TRUE(pump(c, srv));
    const auto& got = c.got[id];
    EXPECT_EQ(got.fields.at(":status"), "200");
    EXPECT_EQ(got.fields.at("x-gateway-region"), "us-east-1");
    EXPECT_EQ(got.fields.count("connection"), 0u);
    EXPECT_EQ(got.fields.count("transfer-encoding"), 0u);
    EXPECT_EQ(got.body, "{\"ok\":true}");
    EXPECT_TRUE(got.ended);
    ASSERT_EQ(r.closed.count(id), 1u);
    EXPECT_TRUE(r.closed[id]);
    EXPECT_EQ(r.reserved, 0u);
    EXPECT_EQ(srv.open_streams(), 0u);
}

TEST(h2_server, many_streams_on_one_connection_are_separate_requests) {
    recorder r;
    h2_server srv(small_limits(), r);
    client c;
    std::vector<std::int32_t> ids;
    for (int i = 0; i < 5; ++i)
        ids.push_back(c.request("POST", "/p" + std::to_string(i), "b" + std::to_string(i)));
    ASSERT_TRUE(pump(c, srv));
    ASSERT_EQ(r.requests.size(), 5u);
    // Answered out of order: each answer reaches its own stream.
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
        ASSERT_TRUE(srv.respond(*it, 200, {}, true));
        ASSERT_TRUE(srv.send_data(*it, r.requests[*it].body(), true));
    }
    ASSERT_TRUE(pump(c, srv));
    for (int i = 0; i < 5; ++i) EXPECT_EQ(c.got[ids[i]].body, "b" + std::to_string(i));
}

TEST(h2_server, headers_past_the_limit_are_refused_on_their_stream_only) {
    recorder r;
    h2_server srv(small_limits(), r);
    client c;
    const auto big = c.request("GET", "/x", "", {{"x-pad", std::string(3000, 'p')}});
    const auto many = [&] {
        std::vector<std::pair<std::string, std::string>> h;
        for (int i = 0; i < 30; ++i) h.push_back({"x-h" + std::to_string(i), "v"});
        return c.request("GET", "/y", "", h);
    }();
    const auto long_path = c.request("GET", "/" + std::string(300, 'a'));
    const auto fine = c.request("GET", "/healthz");
    ASSERT_TRUE(pump(c, srv));
    ASSERT_EQ(r.refused.count(big), 1u);
    EXPECT_EQ(r.refused[big].status, boost::beast::http::status::request_header_fields_too_large);
    EXPECT_NE(r.refused[big].message.find("limits.max_header_bytes"), std::string::npos);
    ASSERT_EQ(r.refused.count(many), 1u);
    EXPECT_NE(r.refused[many].message.find("limits.max_header_count"), std::string::npos);
    ASSERT_EQ(r.refused.count(long_path), 1u);
    EXPECT_EQ(r.refused[long_path].status, boost::beast::http::status::uri_too_long);
    EXPECT_EQ(r.requests.count(fine), 1u);
    EXPECT_EQ(r.requests.size(), 1u);
}

TEST(h2_server, a_body_past_the_limit_is_refused_and_the_rest_dropped) {
    recorder r;
    h2_server srv(small_limits(), r);
    client c;
    const auto id = c.request("POST", "/model/m/converse", std::string(5000, 'b'));
    ASSERT_TRUE(pump(c, srv));
    ASSERT_EQ(r.refused.count(id), 1u);
    EXPECT_EQ(r.refused[id].status, boost::beast::http::status::payload_too_large);
    EXPECT_EQ(r.requests.count(id), 0u);
    EXPECT_EQ(r.reserved, 0u);  // nothing of it is held
    // The owner answers; the client gets the answer whole.
    ASSERT_TRUE(srv.respond(id, 413, {{"content-type", "application/json"}}, true));
    ASSERT_TRUE(srv.send_data(id, "{\"message\":\"too large\"}", true));
    ASSERT_TRUE(pump(c, srv));
    EXPECT_EQ(c.got[id].fields.at(":status"), "413");
    EXPECT_TRUE(c.got[id].ended);
}

TEST(h2_server, the_gateway_wide_body_budget_refuses_with_503) {
    recorder r;
    r.budget = 100;
    h2_server srv(small_limits(), r);
    client c;
    const auto id = c.request("POST", "/model/m/converse", std::string(500, 'b'));
    ASSERT_TRUE(pump(c, srv));
    ASSERT_EQ(r.refused.count(id), 1u);
    EXPECT_EQ(r.refused[id].status, boost::beast::http::status::service_unavailable);
    EXPECT_EQ(r.reserved, 0u);
}

TEST(h2_server, a_head_refused_by_the_owner_gets_its_answer_and_no_request) {
    recorder r;
    r.refuse_every_head =
        bgw::error{boost::beast::http::status::forbidden, "AccessDeniedException", "no key"};
    h2_server srv(small_limits(), r);
    client c;
    const auto id = c.request("POST", "/model/m/converse", "{}");
    ASSERT_TRUE(pump(c, srv));
    ASSERT_EQ(r.refused.count(id), 1u);
    EXPECT_EQ(r.refused[id].type, "AccessDeniedException");
    EXPECT_EQ(r.requests.size(), 0u);
}

TEST(h2_server, a_response_waits_for_the_clients_window) {
    recorder r;
    h2_server srv(small_limits(), r);
    client c(0);  // the client opens no window for response bodies
    const auto id = c.request("GET", "/x");
    ASSERT_TRUE(pump(c, srv));
    ASSERT_TRUE(srv.respond(id, 200, {}, true));
    ASSERT_TRUE(srv.send_data(id, "hello", true));
    ASSERT_TRUE(pump(c, srv));
    EXPECT_EQ(srv.queued(id), 5u);  // held: the window is shut
    EXPECT_TRUE(c.got[id].body.empty());
    // The client opens its window: the piece goes, and the stream ends.
    nghttp2_submit_window_update(c.s, NGHTTP2_FLAG_NONE, id, 100);
    ASSERT_TRUE(pump(c, srv));
    EXPECT_EQ(srv.queued(id), 0u);
    EXPECT_EQ(c.got[id].body, "hello");
    EXPECT_TRUE(c.got[id].ended);
}

TEST(h2_server, a_drained_piece_is_reported_so_the_writer_can_go_on) {
    recorder r;
    h2_server srv(small_limits(), r);
    client c;
    const auto id = c.request("GET", "/x");
    ASSERT_TRUE(pump(c, srv));
    ASSERT_TRUE(srv.respond(id, 200, {}, true));
    ASSERT_TRUE(srv.send_data(id, "part one", false));
    ASSERT_TRUE(pump(c, srv));
    EXPECT_EQ(r.drained, std::vector<std::int32_t>{id});
    EXPECT_FALSE(c.got[id].ended);
    ASSERT_TRUE(srv.send_data(id, "", true));
    ASSERT_TRUE(pump(c, srv));
    EXPECT_TRUE(c.got[id].ended);
    EXPECT_EQ(c.got[id].body, "part one");
}

TEST(h2_server, a_client_reset_closes_the_stream_incomplete) {
    recorder r;
    h2_server srv(small_limits(), r);
    client c;
    const auto id = c.request("POST", "/x", "body");
    ASSERT_TRUE(pump(c, srv));
    nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    ASSERT_TRUE(pump(c, srv));
    ASSERT_EQ(r.closed.count(id), 1u);
    EXPECT_FALSE(r.closed[id]);
    EXPECT_FALSE(srv.respond(id, 200, {}, false));  // the stream is gone
    EXPECT_EQ(r.reserved, 0u);
}

TEST(h2_server, rapid_reset_ends_the_connection_with_enhance_your_calm) {
    auto limits = small_limits();
    limits.reset_burst = 20;
    limits.reset_rate = 1;
    recorder r;
    h2_server srv(limits, r);
    client c;
    bool alive = true;
    for (int i = 0; i < 200 && alive; ++i) {
        const auto id = c.request("GET", "/x");
        alive = pump(c, srv);  // the stream is open on the server's side
        nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
        alive = alive && pump(c, srv);
    }
    ASSERT_TRUE(c.goaway.has_value());
    EXPECT_EQ(*c.goaway, static_cast<std::uint32_t>(NGHTTP2_ENHANCE_YOUR_CALM));
    EXPECT_FALSE(srv.want_read() && srv.want_write());
}

/// A hand-held clock for the rapid-reset guard.
std::chrono::steady_clock::time_point hand_clock_now{};
std::chrono::steady_clock::time_point hand_clock() { return hand_clock_now; }

TEST(h2_server, a_client_that_cancels_at_a_human_pace_is_never_cut) {
    auto limits = small_limits();
    limits.reset_burst = 5;
    limits.reset_rate = 2;
    recorder r;
    h2_server srv(limits, r, hand_clock);
    client c;
    for (int i = 0; i < 100; ++i) {
        hand_clock_now += std::chrono::milliseconds(600);  // under 2 a second, for ever
        const auto id = c.request("GET", "/x");
        ASSERT_TRUE(pump(c, srv));
        nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
        ASSERT_TRUE(pump(c, srv)) << i;
    }
    EXPECT_FALSE(c.goaway.has_value());
    // The same client, then faster than the rate: the bucket (5, less the last reset) holds 4.
    int cut_at = -1;
    for (int i = 0; i < 10 && cut_at < 0; ++i) {
        const auto id = c.request("GET", "/x");
        ASSERT_TRUE(pump(c, srv));
        nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
        if (!pump(c, srv)) cut_at = i;
    }
    EXPECT_EQ(cut_at, 4);
    EXPECT_NE(srv.failure().find("rapid reset"), std::string::npos) << srv.failure();
}

TEST(h2_server, garbage_instead_of_frames_ends_the_connection) {
    recorder r;
    h2_server srv(small_limits(), r);
    EXPECT_FALSE(srv.feed("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_FALSE(srv.failure().empty());
    std::string out;
    srv.take_output(out, 1 << 16);
    EXPECT_FALSE(srv.want_read());
}

TEST(h2_server, an_idle_go_away_ends_a_connection_with_no_streams) {
    recorder r;
    h2_server srv(small_limits(), r);
    client c;
    ASSERT_TRUE(pump(c, srv));
    srv.go_away(NGHTTP2_NO_ERROR, "idle");
    ASSERT_TRUE(pump(c, srv));
    ASSERT_TRUE(c.goaway.has_value());
    EXPECT_EQ(*c.goaway, static_cast<std::uint32_t>(NGHTTP2_NO_ERROR));
    EXPECT_FALSE(srv.want_read());
    EXPECT_FALSE(srv.want_write());
}

}  // namespace
