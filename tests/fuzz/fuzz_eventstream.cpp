// Fuzzes the event-stream decoder (bgw/aws/eventstream.hpp) and the relay built on it
// (bgw/http/event_relay.hpp). The input is one upstream response body. Invariants checked:
// - decode_frame never reports consuming more than it was given, and a frame it accepts
//   re-encodes (to_message -> encode) to exactly the bytes it was decoded from;
// - decode_frame is tried from every offset (as Envoy's fuzzer does), not only the start;
// - the incremental decoder, fed the same bytes in pieces of input-derived sizes, yields the same
//   frames and the same error as decoding the whole body at once, consumes at least one byte of
//   non-empty input unless it fails, and holds exactly the unfinished tail at the end;
// - the relay forwards exactly those frames byte for byte, and nothing after a corrupt one.
#include "bgw/aws/eventstream.hpp"
#include "bgw/http/event_relay.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace es = bgw::aws::eventstream;

namespace {

void check(bool ok, const char* what) {
    if (!ok) {
        __builtin_printf("invariant failed: %s\n", what);
        std::abort();
    }
}

std::string_view chars(std::span<const std::byte> s) {
    return {reinterpret_cast<const char*>(s.data()), s.size()};
}

/// Piece sizes for the incremental decoder, derived from the input itself (deterministic, so a
/// crash reproduces from the file alone): 1..64 bytes, now and then the whole rest.
struct splitter {
    std::uint32_t state;
    std::size_t next(std::size_t rest) {
        state = state * 1103515245u + 12345u;
        const std::uint32_t r = state >> 16;
        if ((r & 7u) == 0) return rest;
        return std::min<std::size_t>(rest, 1 + (r % 64u));
    }
};

/// Whole-body decoding: the frames' wire bytes in order, and the error that ended it (if any).
struct whole_result {
    std::vector<std::string> frames;
    std::optional<es::errc> error;
    std::size_t tail = 0;  ///< bytes of an unfinished last frame
};

whole_result decode_whole(std::span<const std::byte> in) {
    whole_result out;
    while (!in.empty()) {
        auto step = es::decode_frame(in);
        if (!step) {
            out.error = step.error();
            return out;
        }
        check(step->consumed <= in.size(), "decode_frame consumed more than it was given");
        if (!step->frame) {
            check(step->consumed == 0, "need-more step consumed bytes");
            out.tail = in.size();
            return out;
        }
        const auto wire = step->frame->wire();
        check(wire.size() == step->consumed, "frame size differs from bytes consumed");
        check(wire.data() == in.data(), "frame does not view the input");
        check(wire.size() >= es::min_frame_size && wire.size() <= es::max_frame_size,
              "frame size outside the limits");
        check(step->frame->total_length() == wire.size(), "total_length differs from frame");

        // Round trip: decoded -> owned message -> encoder gives the very same bytes.
        const es::message m = step->frame->to_message();
        check(!es::validate(m), "a decoded frame does not validate");
        check(es::encode(m) == chars(wire), "re-encoding a decoded frame changed its bytes");
        check(m.payload == step->frame->payload(), "payload differs");
        for (const auto& h : m.headers) {
            check(step->frame->string_header(h.name) == m.string_header(h.name),
                  "frame_view and message disagree on a string header");
        }
        out.frames.emplace_back(chars(wire));
        in = in.subspan(step->consumed);
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto in = std::as_bytes(std::span<const std::uint8_t>(data, size));
    const whole_result whole = decode_whole(in);

    // From every offset: a frame may start anywhere in a corrupt stream.
    for (std::size_t off = 1; off < size; ++off) {
        auto step = es::decode_frame(in.subspan(off));
        if (step) check(step->consumed <= size - off, "decode_frame (offset) over-consumed");
    }

    // decode_all agrees with the frame-by-frame loop.
    auto all = es::decode_all(in);
    if (whole.error) {
        check(!all && all.error() == *whole.error, "decode_all reports another error");
    } else if (whole.tail != 0) {
        check(!all && all.error() == es::errc::truncated_stream, "decode_all missed truncation");
    } else {
        check(all && all->size() == whole.frames.size(), "decode_all found other frames");
    }

    // Incremental decoder and relay, fed the same bytes in pieces.
    std::uint32_t seed = 2166136261u;
    for (std::size_t i = 0; i < size && i < 16; ++i) seed = (seed ^ data[i]) * 16777619u;
    splitter split{seed};
    es::decoder dec;
    bgw::http::event_relay relay;
    std::string relayed;
    std::vector<std::string> frames;
    std::optional<es::errc> error;
    bool relay_ok = true;
    for (auto rest = in; !rest.empty();) {
        auto piece = rest.first(split.next(rest.size()));
        rest = rest.subspan(piece.size());
        relay_ok = relay.feed(chars(piece), relayed) && relay_ok;
        while (!piece.empty() && !error) {
            auto step = dec.feed(piece);
            if (!step) {
                error = step.error();
                check(dec.error() == error, "decoder forgot its error");
                auto again = dec.feed(piece);
                check(!again && again.error() == *error, "failed decoder accepted bytes");
                break;
            }
            check(step->consumed <= piece.size(), "decoder consumed more than it was given");
            check(step->consumed > 0, "decoder made no progress on non-empty input");
            if (step->frame) frames.emplace_back(chars(step->frame->wire()));
            piece = piece.subspan(step->consumed);
        }
    }
    check(frames == whole.frames, "incremental frames differ from whole-body decoding");
    check(error == whole.error, "incremental error differs from whole-body decoding");
    if (!error) check(dec.buffered() == whole.tail, "decoder holds a different tail");

    std::string expected;
    for (const auto& f : whole.frames) expected += f;
    check(relayed == expected, "relay output differs from the decoded frames");
    check(relay_ok == !whole.error, "relay verdict differs from the decoder's");
    check(relay.summary().frames == whole.frames.size(), "relay counted other frames");
    check(relay.summary().corrupt.empty() == !whole.error, "relay corrupt text inconsistent");
    if (!whole.error) check(relay.pending() == whole.tail, "relay holds a different tail");

    // The failure frame the relay sends to a client must itself decode.
    if (!relay.summary().corrupt.empty()) {
        auto failure = bgw::http::stream_failure_frame(relay.summary().corrupt);
        auto decoded = es::decode_all(failure);
        check(decoded && decoded->size() == 1, "stream_failure_frame does not decode");
    }
    return 0;
}
