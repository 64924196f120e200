// Event-stream micro-benchmarks: decoding a Bedrock stream (both CRCs, header block) and the
// gateway's relay core on top of it, per byte. Input comes in 16 KiB pieces, the size of the
// gateway's relay read buffer (src/net/relay.cpp).

#include "bgw/aws/eventstream.hpp"
#include "bgw/http/event_relay.hpp"

#include <algorithm>
#include <string>

#include <benchmark/benchmark.h>

namespace {

namespace es = bgw::aws::eventstream;

constexpr std::size_t piece_size = 16 * 1024;

/// About 1 MiB of ConverseStream frames whose payload is `payload_bytes` of text each.
std::string stream_mib(std::size_t payload_bytes) {
    const std::string text(payload_bytes, 'x');
    const std::string frame = es::bedrock_event(
        "contentBlockDelta", R"({"contentBlockIndex":0,"delta":{"text":")" + text + "\"}}");
    std::string out;
    while (out.size() < 1024 * 1024) out += frame;
    return out;
}

/// The codec alone: every frame found and checked (range(0): text bytes per frame; a model's
/// token delta is a few bytes, a large chunk a few KiB).
void eventstream_decode(benchmark::State& state) {
    const std::string body = stream_mib(static_cast<std::size_t>(state.range(0)));
    std::size_t frames = 0;
    for (auto _ : state) {
        es::decoder dec;
        for (std::string_view in = body; !in.empty();) {
            std::string_view piece = in.substr(0, piece_size);
            in.remove_prefix(piece.size());
            while (!piece.empty()) {
                auto step = dec.feed(piece);
                if (!step) {
                    state.SkipWithError("decode failed");
                    return;
                }
                piece.remove_prefix(step->consumed);
                if (step->frame) ++frames;
            }
        }
    }
    benchmark::DoNotOptimize(frames);
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(body.size()));
}
BENCHMARK(eventstream_decode)->Arg(8)->Arg(200)->Arg(4096);

/// What the gateway runs per upstream read: decode, observe (usage, exceptions), and copy the
/// whole frames out for the client write.
void event_relay_feed(benchmark::State& state) {
    const std::string body = stream_mib(static_cast<std::size_t>(state.range(0)));
    std::string out;
    for (auto _ : state) {
        bgw::http::event_relay relay;
        for (std::string_view in = body; !in.empty();) {
            const std::string_view piece = in.substr(0, piece_size);
            in.remove_prefix(piece.size());
            out.clear();
            if (!relay.feed(piece, out)) {
                state.SkipWithError("relay failed");
                return;
            }
            benchmark::DoNotOptimize(out.data());
        }
    }
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(body.size()));
}
BENCHMARK(event_relay_feed)->Arg(8)->Arg(200)->Arg(4096);

}  // namespace
