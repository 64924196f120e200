// Fuzzes the client-side request parser (bgw/http/front_parser.hpp), the first code a client's
// bytes reach. Input: the first byte picks where the bytes are split in two (as two TCP segments
// would deliver them), the rest is what the client sent. Invariants checked on every input:
// - nothing throws (Beast's basic_fields throws std::length_error on fields past 16-bit offsets;
//   the parser must refuse those first) and nothing leaks or reads out of bounds (ASan/UBSan);
// - fed whole, fed split, and fed one byte at a time, the outcome is the same: the same refusal,
//   the same Beast error, or the same complete message (target, fields, body); only a failure
//   may show in one feed while another still waits for more bytes (agree());
// - a refusal is one of the statuses the gateway answers with (400, 414, 431, 501);
// - a complete body is within max_body_bytes; extension and trailer bytes within max_header_bytes.
#include "bgw/http/front_parser.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "support/feed_pieces.hpp"
#include <boost/asio/buffer.hpp>

namespace http = boost::beast::http;

namespace {

void check(bool ok, const char* what) {
    if (!ok) {
        __builtin_fprintf(stderr, "invariant failed: %s\n", what);
        std::abort();
    }
}

struct outcome {
    unsigned status = 0;
    std::string error;
    bool done = false;
    std::string message;  // target, fields and body, once complete
    bool operator==(const outcome&) const = default;
};

constexpr bgw::http::front_limits limits{2048, 16, 512, 4096};

outcome parse(std::string_view wire, const std::vector<std::size_t>& cuts) {
    bgw::http::front_parser p(limits);
    p.eager(true);
    const auto [ec, left] = bgw::test::feed_pieces(p, wire, cuts);
    outcome o;
    if (p.refusal()) o.status = static_cast<unsigned>(p.refusal()->status);
    if (ec) o.error = ec.message();
    o.done = p.is_done();
    if (o.done) {
        const auto& m = p.get();
        o.message = std::string(m.target()) + "\n";
        for (const auto& f : m)
            o.message += std::string(f.name_string()) + ":" + std::string(f.value()) + "\n";
        o.message += m.body();
        check(m.body().size() <= limits.max_body_bytes, "body over max_body_bytes");
        check(p.extra_head_bytes() <= limits.max_header_bytes, "extensions/trailers over limit");
    }
    return o;
}

}  // namespace

/// The same outcome, or: one failed on bytes the other has not looked at yet. Beast parses an
/// incomplete head as far as the piece it has allows (whole, it may meet a bad line or a
/// field over a limit; in pieces, it may wait for the head's end first); either way no request
/// is accepted from them, and whatever comes next fails it or times it out.
bool agree(const outcome& a, const outcome& b) {
    if (a == b) return true;
    auto pending = [](const outcome& o) { return !o.done && o.error.empty() && o.status == 0; };
    auto failed = [](const outcome& o) { return !o.done && (!o.error.empty() || o.status != 0); };
    return (pending(a) && failed(b)) || (failed(a) && pending(b));
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::string_view wire(reinterpret_cast<const char*>(data) + 1, size - 1);
    const outcome whole = parse(wire, {});
    if (whole.status != 0) {
        check(whole.status == 400 || whole.status == 414 || whole.status == 431 ||
                  whole.status == 501,
              "unexpected refusal status");
    }
    if (!wire.empty()) {
        const std::size_t cut = 1 + data[0] % wire.size();
        std::vector<std::size_t> one;
        if (cut < wire.size()) one.push_back(cut);
        check(agree(parse(wire, one), whole), "split in two: another outcome");
    }
    if (wire.size() <= 512) {
        std::vector<std::size_t> bytes;
        for (std::size_t i = 1; i < wire.size(); ++i) bytes.push_back(i);
        check(agree(parse(wire, bytes), whole), "one byte at a time: another outcome");
    }
    return 0;
}
