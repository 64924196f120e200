// Fuzzes the HTTP/2 front door (bgw/http/h2_server.hpp): what a client's bytes reach after the
// preface. Input: the first byte picks how the rest is split into reads (as TCP would deliver
// them), the rest follows a valid preface. The owner answers every request at once (a head and
// two body pieces) and every refusal, so responses and flow control are exercised too.
// Invariants checked on every input:
// - nothing throws, leaks or reads out of bounds (ASan/UBSan), however the frames are malformed;
// - a request handed over is within the limits (target, fields, body), a refusal is one of the
//   statuses the gateway answers with (413, 414, 431, 503 or the owner's own);
// - every body byte held is given back by the time the connection is gone;
// - once the server says the connection must end, it asks for nothing more to read.
#include "bgw/http/h2_server.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

void check(bool ok, const char* what) {
    if (!ok) {
        __builtin_fprintf(stderr, "invariant failed: %s\n", what);
        std::abort();
    }
}

constexpr bgw::http::h2_limits limits{.max_concurrent_streams = 16,
                                      .max_header_bytes = 4096,
                                      .max_header_count = 32,
                                      .max_target_bytes = 512,
                                      .max_body_bytes = 4096,
                                      .reset_burst = 8,
                                      .reset_rate = 1};

struct owner : bgw::http::h2_events {
    bgw::http::h2_server* srv = nullptr;
    std::size_t held = 0;
    std::vector<std::int32_t> to_answer;

    std::optional<bgw::error> check_head(std::int32_t, const bgw::http::h2_request& h) override {
        check(h.target().size() <= limits.max_target_bytes, "target within its limit");
        if (h.target() == "/refuse")
            return bgw::error{boost::beast::http::status::forbidden, "AccessDeniedException", "no"};
        return std::nullopt;
    }
    bool reserve_body(std::size_t n) override {
        if (held + n > 3 * limits.max_body_bytes) return false;
        held += n;
        return true;
    }
    void release_body(std::size_t n) override {
        check(n <= held, "a release matches a reservation");
        held -= n;
    }
    void on_request(std::int32_t id, bgw::http::h2_request& req) override {
        check(req.body().size() <= limits.max_body_bytes, "body within its limit");
        to_answer.push_back(id);
    }
    void on_refused(std::int32_t id, const bgw::error& why, const bgw::http::h2_request&) override {
        const unsigned s = static_cast<unsigned>(why.status);
        check(s == 403 || s == 413 || s == 414 || s == 431 || s == 503, "a known refusal");
        to_answer.push_back(id);
    }
    void on_closed(std::int32_t, bool, std::uint32_t) override {}
    void on_drained(std::int32_t) override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::size_t piece = 1 + data[0] % 64;
    const std::string input = std::string(bgw::http::h2_preface) +
                              std::string(reinterpret_cast<const char*>(data + 1), size - 1);
    owner o;
    {
        bgw::http::h2_server srv(limits, o);
        o.srv = &srv;
        std::string out;
        bool alive = true;
        for (std::size_t at = 0; at < input.size() && alive; at += piece) {
            alive = srv.feed(std::string_view(input).substr(at, piece));
            for (auto id : o.to_answer) {
                if (srv.respond(id, 200, {{"content-type", "application/json"}}, true)) {
                    srv.send_data(id, "{\"a\":", false);
                    srv.send_data(id, "1}", true);
                }
            }
            o.to_answer.clear();
            out.clear();
            srv.take_output(out, 1 << 16);
        }
        if (!alive) check(!srv.want_read(), "an ended connection reads no more");
    }
    check(o.held == 0, "every body byte is given back");
    return 0;
}
