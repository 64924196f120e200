// The event-stream relay core against the Bedrock frames in tests/reference (read at test
// time): bytes out equal bytes in at every split, usage and exceptions are learnt on the side,
// and a corrupt frame is held back and replaced by one error frame.

#include "bgw/http/event_relay.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "unit/slurp.hpp"
#include <boost/beast/core/detail/base64.hpp>
#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace {

namespace fs = std::filesystem;
namespace es = bgw::aws::eventstream;
using bgw::http::event_relay;

const fs::path frames_dir = fs::path(BGW_REFERENCE_DIR) / "eventstream" / "bedrock-frames";

using bgw::test::read_or_fail;

/// The frames' descriptions from X.json: one document, an array of {headers, payload_utf8}.
/// A missing or unreadable file fails the calling test and reads as an empty array, so the
/// test fails on its assertions instead of crashing on a non-array.
rapidjson::Document description(const std::string& name) {
    rapidjson::Document doc;
    const std::string text = read_or_fail(frames_dir / (name + ".json"));
    doc.Parse(text.data(), text.size());
    EXPECT_FALSE(doc.HasParseError()) << name;
    EXPECT_TRUE(doc.IsArray()) << name;
    if (doc.HasParseError() || !doc.IsArray()) doc.SetArray();
    return doc;
}

std::string header_value(const rapidjson::Value& frame, std::string_view name) {
    for (const auto& h : frame["headers"].GetArray()) {
        if (name == h["name"].GetString() && h["value"].IsString()) return h["value"].GetString();
    }
    return {};
}

std::string beast_base64_decode(std::string_view in) {
    namespace b64 = boost::beast::detail::base64;
    std::string out(b64::decoded_size(in.size()), '\0');
    auto [written, read] = b64::decode(out.data(), in.data(), in.size());
    out.resize(written);
    return out;
}

/// Runs `wire` through a relay in pieces of `piece` bytes; returns what came out.
std::string relay_in_pieces(event_relay& relay, std::string_view wire, std::size_t piece) {
    std::string out;
    for (std::size_t at = 0; at < wire.size(); at += piece) {
        EXPECT_TRUE(relay.feed(wire.substr(at, piece), out)) << relay.summary().corrupt;
    }
    return out;
}

TEST(event_relay, reference_frames_present) {
    ASSERT_TRUE(fs::is_directory(frames_dir)) << frames_dir;
    std::size_t bins = 0;
    for (const auto& e : fs::directory_iterator(frames_dir)) bins += e.path().extension() == ".bin";
    EXPECT_GE(bins, 6u);
}

TEST(event_relay, every_reference_stream_passes_unchanged_at_every_split) {
    for (const auto& e : fs::directory_iterator(frames_dir)) {
        if (e.path().extension() != ".bin") continue;
        const std::string wire = read_or_fail(e.path());
        const auto frames = description(e.path().stem().string());
        for (std::size_t piece = 1; piece <= wire.size(); ++piece) {
            event_relay relay;
            ASSERT_EQ(relay_in_pieces(relay, wire, piece), wire) << e.path() << " piece " << piece;
            EXPECT_EQ(relay.pending(), 0u);
            EXPECT_EQ(relay.summary().frames, frames.Size());
            EXPECT_TRUE(relay.summary().corrupt.empty());
        }
    }
}

TEST(event_relay, converse_stream_usage_from_metadata) {
    const std::string name = "synthetic-converse-stream";
    const auto frames = description(name);
    std::optional<std::uint64_t> in, out;
    for (const auto& f : frames.GetArray()) {
        if (header_value(f, ":event-type") != "metadata") continue;
        rapidjson::Document payload;
        payload.Parse(f["payload_utf8"].GetString());
        in = payload["usage"]["inputTokens"].GetUint64();
        out = payload["usage"]["outputTokens"].GetUint64();
    }
    ASSERT_TRUE(in && out) << "the reference stream has a metadata event with usage";

    event_relay relay;
    std::string forwarded;
    ASSERT_TRUE(relay.feed(read_or_fail(frames_dir / (name + ".bin")), forwarded));
    EXPECT_EQ(relay.summary().input_tokens, in);
    EXPECT_EQ(relay.summary().output_tokens, out);
    EXPECT_EQ(relay.summary().events, frames.Size());
    EXPECT_TRUE(relay.summary().exception.empty());
}

TEST(event_relay, invoke_stream_usage_from_invocation_metrics) {
    const std::string name = "synthetic-invoke-stream-anthropic-messages";
    const auto frames = description(name);
    std::optional<std::uint64_t> in, out;
    for (const auto& f : frames.GetArray()) {
        rapidjson::Document payload;
        payload.Parse(f["payload_utf8"].GetString());
        const std::string model_json = beast_base64_decode(payload["bytes"].GetString());
        rapidjson::Document inner;
        inner.Parse(model_json.data(), model_json.size());
        ASSERT_FALSE(inner.HasParseError()) << model_json;
        if (inner.HasMember("amazon-bedrock-invocationMetrics")) {
            in = inner["amazon-bedrock-invocationMetrics"]["inputTokenCount"].GetUint64();
            out = inner["amazon-bedrock-invocationMetrics"]["outputTokenCount"].GetUint64();
        }
    }
    ASSERT_TRUE(in && out) << "the reference stream's last chunk has invocation metrics";

    event_relay relay;
    std::string forwarded;
    ASSERT_TRUE(relay.feed(read_or_fail(frames_dir / (name + ".bin")), forwarded));
    EXPECT_EQ(relay.summary().input_tokens, in);
    EXPECT_EQ(relay.summary().output_tokens, out);
}

TEST(event_relay, midstream_exception_is_forwarded_and_noted) {
    for (const auto* name : {"synthetic-invoke-stream-midstream-throttling",
                             "synthetic-converse-stream-model-stream-error"}) {
        const auto frames = description(name);
        ASSERT_FALSE(frames.Empty()) << name;
        const auto& last = frames[frames.Size() - 1];
        ASSERT_EQ(header_value(last, ":message-type"), "exception") << name;
        rapidjson::Document payload;
        payload.Parse(last["payload_utf8"].GetString());

        event_relay relay;
        std::string forwarded;
        const std::string wire = read_or_fail(frames_dir / (std::string(name) + ".bin"));
        ASSERT_TRUE(relay.feed(wire, forwarded));
        EXPECT_EQ(forwarded, wire) << "the exception frame goes to the client as it is";
        EXPECT_EQ(relay.summary().exception, header_value(last, ":exception-type")) << name;
        EXPECT_EQ(relay.summary().exception_message, payload["message"].GetString());
        EXPECT_EQ(relay.summary().events, frames.Size() - 1);
    }
}

TEST(event_relay, error_frame_is_noted) {
    const auto frames = description("synthetic-message-type-error");
    ASSERT_FALSE(frames.Empty());
    event_relay relay;
    std::string forwarded;
    ASSERT_TRUE(
        relay.feed(read_or_fail(frames_dir / "synthetic-message-type-error.bin"), forwarded));
    EXPECT_EQ(relay.summary().exception, header_value(frames[0], ":error-code"));
    EXPECT_EQ(relay.summary().exception_message, header_value(frames[0], ":error-message"));
    EXPECT_EQ(relay.summary().events, 0u);
}

TEST(event_relay, corrupt_frame_is_held_back_and_the_relay_stays_failed) {
    const std::string wire = read_or_fail(frames_dir / "synthetic-converse-stream.bin");
    auto all = es::decode_all(wire);
    ASSERT_TRUE(all) << es::to_string(all.error());
    ASSERT_GE(all->size(), 3u);
    const std::size_t first_two = es::encode((*all)[0]).size() + es::encode((*all)[1]).size();
    const std::size_t third = es::encode((*all)[2]).size();

    // A flipped payload byte in the third frame: its message CRC no longer matches.
    std::string bad = wire;
    bad[first_two + third - 6] = static_cast<char>(bad[first_two + third - 6] ^ 0x01);
    for (std::size_t piece : {std::size_t{1}, std::size_t{7}, bad.size()}) {
        event_relay relay;
        std::string out;
        bool ok = true;
        for (std::size_t at = 0; at < bad.size() && ok; at += piece)
            ok = relay.feed(std::string_view(bad).substr(at, piece), out);
        EXPECT_FALSE(ok) << "piece " << piece;
        EXPECT_EQ(out, wire.substr(0, first_two)) << "only the sound frames before it go out";
        EXPECT_EQ(relay.summary().corrupt, "Message checksum mismatch");
        EXPECT_EQ(relay.summary().frames, 2u);
        std::string more;
        EXPECT_FALSE(relay.feed(wire, more));
        EXPECT_TRUE(more.empty());
    }
}

TEST(event_relay, partial_frame_is_pending) {
    const std::string wire = read_or_fail(frames_dir / "synthetic-converse-stream.bin");
    event_relay relay;
    std::string out;
    ASSERT_TRUE(relay.feed(std::string_view(wire).substr(0, 20), out));
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(relay.pending(), 20u);
}

TEST(event_relay, failure_frame_is_a_valid_error_frame) {
    const std::string frame = bgw::http::stream_failure_frame("upstream went bad");
    auto msgs = es::decode_all(frame);
    ASSERT_TRUE(msgs) << es::to_string(msgs.error());
    ASSERT_EQ(msgs->size(), 1u);
    const auto& m = (*msgs)[0];
    EXPECT_EQ(m.string_header(":message-type"), "error");
    EXPECT_EQ(m.string_header(":error-code"), "InternalServerException");
    EXPECT_EQ(m.string_header(":error-message"), "upstream went bad");
    EXPECT_TRUE(m.payload.empty());
}

TEST(event_relay, base64_decode) {
    using bgw::http::base64_decode;
    EXPECT_EQ(base64_decode(""), "");
    EXPECT_EQ(base64_decode("Zg=="), "f");
    EXPECT_EQ(base64_decode("Zm8="), "fo");
    EXPECT_EQ(base64_decode("Zm9v"), "foo");
    EXPECT_EQ(base64_decode("Zm9vYmFy"), "foobar");
    EXPECT_EQ(base64_decode("Zm9"), std::nullopt);
    EXPECT_EQ(base64_decode("Zm9!"), std::nullopt);
}

}  // namespace
