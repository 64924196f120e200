// The event-stream codec on hand-built frames: every limit and error of decode_frame, the
// incremental decoder's contract (splits, in-place views, sticky failure, reset, buffered()),
// decode_all, validate/encode and the Bedrock frame builders. Frames here are assembled byte by
// byte with their own CRC (Boost.CRC), independently of the encoder under test.

#include "bgw/aws/eventstream.hpp"

#include <cstdint>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <boost/crc.hpp>
#include <gtest/gtest.h>

namespace bgw::aws::eventstream {
// Failure messages show the error text rather than a raw byte.
inline void PrintTo(errc e, std::ostream* os) { *os << to_string(e); }
}  // namespace bgw::aws::eventstream

namespace {

namespace es = bgw::aws::eventstream;
using es::errc;

// ---- raw frame assembly ----------------------------------------------------------------------

std::string be(std::uint64_t v, int n) {
    std::string out;
    for (int i = n - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return out;
}

std::uint32_t crc(std::string_view s) {
    boost::crc_32_type c;
    c.process_bytes(s.data(), s.size());
    return c.checksum();
}

/// A 12-byte prelude declaring `total` and `headers_len`, with a correct prelude CRC.
std::string prelude(std::uint32_t total, std::uint32_t headers_len) {
    std::string p = be(total, 4) + be(headers_len, 4);
    return p + be(crc(p), 4);
}

/// A frame whose lengths are derived from its parts and whose CRCs are both correct.
std::string frame(std::string_view headers, std::string_view payload = {}) {
    const auto total = static_cast<std::uint32_t>(16 + headers.size() + payload.size());
    std::string f = prelude(total, static_cast<std::uint32_t>(headers.size()));
    f.append(headers);
    f.append(payload);
    return f + be(crc(f), 4);
}

std::string hdr(std::string_view name, int type, std::string_view value_bytes) {
    std::string h(1, static_cast<char>(name.size()));
    h.append(name);
    h.push_back(static_cast<char>(type));
    h.append(value_bytes);
    return h;
}

std::string str_hdr(std::string_view name, std::string_view value) {
    return hdr(name, 7, be(value.size(), 2) + std::string(value));
}

std::span<const std::byte> bytes(std::string_view s) {
    return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

std::string text(std::span<const std::byte> s) {
    return {reinterpret_cast<const char*>(s.data()), s.size()};
}

/// decode_frame's error on `f`, or nullopt when it accepted or wants more.
std::optional<errc> frame_error(std::string_view f) {
    auto r = es::decode_frame(bytes(f));
    if (!r) return r.error();
    return std::nullopt;
}

es::message all_types_message() {
    es::message m;
    m.headers = {
        {"t", true},
        {"f", false},
        {"i8", std::int8_t{-128}},
        {"i16", std::int16_t{-2}},
        {"i32", std::int32_t{std::numeric_limits<std::int32_t>::min()}},
        {"i64", std::int64_t{std::numeric_limits<std::int64_t>::min()}},
        {"bytes", es::byte_array{std::byte{0}, std::byte{0xff}, std::byte{0x80}}},
        {"str", std::string("h\0llo", 5)},
        {"ts", es::timestamp{std::chrono::milliseconds{-1}}},
        {"uuid", es::uuid{std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}, std::byte{5},
                          std::byte{6}, std::byte{7}, std::byte{8}, std::byte{9}, std::byte{10},
                          std::byte{11}, std::byte{12}, std::byte{13}, std::byte{14}, std::byte{15},
                          std::byte{0xff}}},
    };
    m.payload = std::string("{\"a\":1}\0\xff", 9);
    return m;
}

// ---- errors ----------------------------------------------------------------------------------

TEST(eventstream_errc, texts) {
    EXPECT_EQ(es::to_string(errc::prelude_checksum_mismatch), "Prelude checksum mismatch");
    EXPECT_EQ(es::to_string(errc::message_checksum_mismatch), "Message checksum mismatch");
    std::vector<std::string_view> seen;
    for (int i = 1; i <= static_cast<int>(errc::truncated_stream); ++i) {
        const auto t = es::to_string(static_cast<errc>(i));
        EXPECT_FALSE(t.empty()) << i;
        for (auto s : seen) EXPECT_NE(s, t) << i;
        seen.push_back(t);
    }
    EXPECT_FALSE(es::to_string(static_cast<errc>(0)).empty());
    EXPECT_FALSE(es::to_string(static_cast<errc>(200)).empty());
}

TEST(eventstream_errc, value_on_error_throws_logic_error) {
    es::codec_result<int> r = errc::duplicate_header;
    ASSERT_FALSE(r);
    try {
        (void)r.value();
        ADD_FAILURE() << "no throw";
    } catch (const std::logic_error& e) {
        EXPECT_EQ(std::string_view(e.what()), es::to_string(errc::duplicate_header));
    }
}

// ---- header values ---------------------------------------------------------------------------

TEST(eventstream_codec, type_of_every_alternative) {
    using es::header_type;
    EXPECT_EQ(es::type_of(true), header_type::bool_true);
    EXPECT_EQ(es::type_of(false), header_type::bool_false);
    EXPECT_EQ(es::type_of(std::int8_t{1}), header_type::byte);
    EXPECT_EQ(es::type_of(std::int16_t{1}), header_type::int16);
    EXPECT_EQ(es::type_of(std::int32_t{1}), header_type::int32);
    EXPECT_EQ(es::type_of(std::int64_t{1}), header_type::int64);
    EXPECT_EQ(es::type_of(es::byte_array{}), header_type::byte_array);
    EXPECT_EQ(es::type_of(std::string{}), header_type::string);
    EXPECT_EQ(es::type_of(es::timestamp{}), header_type::timestamp);
    EXPECT_EQ(es::type_of(es::uuid{}), header_type::uuid);
}

TEST(eventstream_codec, message_find_and_string_header) {
    const auto m = all_types_message();
    ASSERT_NE(m.find("i16"), nullptr);
    EXPECT_EQ(m.find("i16")->value, es::header_value(std::int16_t{-2}));
    EXPECT_EQ(m.find("I16"), nullptr);  // case-sensitive
    EXPECT_EQ(m.find("missing"), nullptr);
    EXPECT_EQ(m.string_header("str"), std::string_view("h\0llo", 5));
    EXPECT_EQ(m.string_header("bytes"), std::nullopt);  // not a string
    EXPECT_EQ(m.string_header("missing"), std::nullopt);
}

// ---- encode / decode round trip --------------------------------------------------------------

TEST(eventstream_codec, encode_matches_hand_built_frame) {
    es::message m;
    m.headers = {{":event-type", std::string("chunk")}, {"n", std::int32_t{0x01020304}}};
    m.payload = "{}";
    const std::string expected =
        frame(str_hdr(":event-type", "chunk") + hdr("n", 4, be(0x01020304, 4)), "{}");
    EXPECT_EQ(es::encode(m), expected);
    EXPECT_EQ(es::encode(es::message{}), frame(""));
    EXPECT_EQ(es::encode(es::message{}).size(), es::min_frame_size);
}

TEST(eventstream_codec, round_trip_every_type_and_accessors) {
    const auto m = all_types_message();
    ASSERT_EQ(es::validate(m), std::nullopt);
    const std::string wire = es::encode(m);
    const std::string tail = "trailing";
    const std::string in = wire + tail;
    auto r = es::decode_frame(bytes(in));
    ASSERT_TRUE(r) << es::to_string(r.error());
    EXPECT_EQ(r->consumed, wire.size());
    ASSERT_TRUE(r->frame);
    const es::frame_view& f = *r->frame;
    EXPECT_EQ(f.wire().data(), bytes(in).data());
    EXPECT_EQ(text(f.wire()), wire);
    EXPECT_EQ(f.total_length(), wire.size());
    EXPECT_EQ(f.headers_length(), wire.size() - 16 - m.payload.size());
    EXPECT_EQ(f.prelude_crc(), crc(std::string_view(wire).substr(0, 8)));
    EXPECT_EQ(f.message_crc(), crc(std::string_view(wire).substr(0, wire.size() - 4)));
    EXPECT_EQ(text(f.header_block()), wire.substr(12, f.headers_length()));
    EXPECT_EQ(f.payload(), m.payload);
    EXPECT_EQ(f.string_header("str"), std::string_view("h\0llo", 5));
    EXPECT_EQ(f.string_header("uuid"), std::nullopt);
    EXPECT_EQ(f.string_header("st"), std::nullopt);
    EXPECT_EQ(f.string_header("missing"), std::nullopt);
    EXPECT_EQ(f.to_message(), m);
}

TEST(eventstream_codec, string_header_on_unaligned_frame) {
    // Views at odd offsets: accessors read byte by byte (ASan/UBSan would flag aligned loads).
    const std::string wire = es::bedrock_event("chunk", "{\"x\":1}");
    for (std::size_t pad = 1; pad < 8; ++pad) {
        const std::string in = std::string(pad, '\0') + wire;
        auto r = es::decode_frame(bytes(in).subspan(pad));
        ASSERT_TRUE(r);
        ASSERT_TRUE(r->frame);
        EXPECT_EQ(r->frame->string_header(":event-type"), "chunk");
        EXPECT_EQ(r->frame->total_length(), wire.size());
        EXPECT_EQ(r->frame->payload(), "{\"x\":1}");
    }
}

// ---- decode_frame: need more / limits / errors -----------------------------------------------

TEST(eventstream_decode_frame, needs_more) {
    const std::string f = frame(str_hdr("a", "b"), "payload");
    for (std::size_t n = 0; n < f.size(); ++n) {
        auto r = es::decode_frame(bytes(f).first(n));
        ASSERT_TRUE(r) << n;
        EXPECT_EQ(r->consumed, 0u) << n;
        EXPECT_FALSE(r->frame) << n;
    }
    auto r = es::decode_frame(bytes(f));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->consumed, f.size());
    EXPECT_TRUE(r->frame);
}

TEST(eventstream_decode_frame, prelude_checksum_mismatch_first) {
    std::string p = prelude(100, 0);
    p[11] = static_cast<char>(p[11] ^ 1);
    EXPECT_EQ(frame_error(p), errc::prelude_checksum_mismatch);
    // A bad CRC wins over every length check.
    std::string q = prelude(3, 100);
    q[8] = static_cast<char>(q[8] ^ 0x40);
    EXPECT_EQ(frame_error(q), errc::prelude_checksum_mismatch);
}

TEST(eventstream_decode_frame, frame_too_short) {
    EXPECT_EQ(frame_error(prelude(0, 0)), errc::frame_too_short);
    EXPECT_EQ(frame_error(prelude(15, 0)), errc::frame_too_short);
    EXPECT_EQ(frame_error(prelude(15, 200000)), errc::frame_too_short);  // before headers_too_long
    EXPECT_EQ(frame_error(prelude(16, 0)), std::nullopt);                // 12 bytes: needs more
}

TEST(eventstream_decode_frame, frame_too_long_from_prelude_alone) {
    const auto over = static_cast<std::uint32_t>(es::max_frame_size + 1);
    EXPECT_EQ(frame_error(prelude(over, 0)), errc::frame_too_long);
    EXPECT_EQ(frame_error(prelude(0xffffffffu, 0xffffffffu)), errc::frame_too_long);
    EXPECT_EQ(frame_error(prelude(static_cast<std::uint32_t>(es::max_frame_size), 0)),
              std::nullopt);
}

TEST(eventstream_decode_frame, max_size_frame_accepted) {
    es::message m;
    m.payload.assign(es::max_frame_size - es::min_frame_size, 'x');
    ASSERT_EQ(es::validate(m), std::nullopt);
    const std::string wire = es::encode(m);
    ASSERT_EQ(wire.size(), es::max_frame_size);
    auto r = es::decode_frame(bytes(wire));
    ASSERT_TRUE(r) << es::to_string(r.error());
    ASSERT_TRUE(r->frame);
    EXPECT_EQ(r->frame->payload().size(), m.payload.size());
    m.payload.push_back('x');
    EXPECT_EQ(es::validate(m), errc::frame_too_long);
}

TEST(eventstream_decode_frame, headers_too_long) {
    const auto limit = static_cast<std::uint32_t>(es::max_headers_size);
    EXPECT_EQ(frame_error(prelude(limit + 100, limit + 1)), errc::headers_too_long);
    EXPECT_EQ(frame_error(prelude(limit + 16, limit)), std::nullopt);
}

TEST(eventstream_decode_frame, headers_exceed_frame) {
    EXPECT_EQ(frame_error(prelude(20, 5)), errc::headers_exceed_frame);
    EXPECT_EQ(frame_error(prelude(16, 1)), errc::headers_exceed_frame);
    EXPECT_EQ(frame_error(prelude(20, 4)), std::nullopt);
}

TEST(eventstream_decode_frame, message_checksum_mismatch_before_header_errors) {
    std::string f = frame(hdr("", 0, ""), "p");  // empty name, but corrupt the payload
    EXPECT_EQ(frame_error(f), errc::header_name_empty);
    f[f.size() - 5] = 'q';
    EXPECT_EQ(frame_error(f), errc::message_checksum_mismatch);
    std::string g = frame("", "abc");
    g.back() = static_cast<char>(g.back() ^ 1);
    EXPECT_EQ(frame_error(g), errc::message_checksum_mismatch);
}

TEST(eventstream_decode_frame, header_truncated) {
    const std::string full = str_hdr("name", "value");
    // Every proper prefix of a header is truncated (name length, name, type, length, value).
    for (std::size_t n = 1; n < full.size(); ++n) {
        EXPECT_EQ(frame_error(frame(full.substr(0, n), "payload")), errc::header_truncated) << n;
    }
    EXPECT_EQ(frame_error(frame(full, "payload")), std::nullopt);
    EXPECT_EQ(frame_error(frame(hdr("i", 5, "1234567"))), errc::header_truncated);
    EXPECT_EQ(frame_error(frame(hdr("u", 9, std::string(15, 'u')))), errc::header_truncated);
    EXPECT_EQ(frame_error(frame(hdr("b", 6, be(3, 2) + "ab"))), errc::header_truncated);
    // A second header cut short after a good first one.
    EXPECT_EQ(frame_error(frame(str_hdr("a", "b") + hdr("c", 3, "x"))), errc::header_truncated);
}

TEST(eventstream_decode_frame, header_name_empty) {
    EXPECT_EQ(frame_error(frame(hdr("", 0, ""))), errc::header_name_empty);
    EXPECT_EQ(frame_error(frame(str_hdr("a", "b") + hdr("", 7, be(0, 2)))),
              errc::header_name_empty);
}

TEST(eventstream_decode_frame, unknown_header_type) {
    EXPECT_EQ(frame_error(frame(hdr("x", 10, ""))), errc::unknown_header_type);
    EXPECT_EQ(frame_error(frame(hdr("x", 255, "12345678"))), errc::unknown_header_type);
    EXPECT_EQ(frame_error(frame(hdr("x", 9, std::string(16, 'u')))), std::nullopt);
}

TEST(eventstream_decode_frame, header_value_too_long) {
    const std::size_t limit = es::max_header_value_size;
    EXPECT_EQ(frame_error(frame(hdr("s", 7, be(limit + 1, 2) + std::string(limit + 1, 'v')))),
              errc::header_value_too_long);
    EXPECT_EQ(frame_error(frame(hdr("b", 6, be(0xffff, 2) + std::string(0xffff, 'v')))),
              errc::header_value_too_long);
    EXPECT_EQ(frame_error(frame(hdr("s", 7, be(limit, 2) + std::string(limit, 'v')))),
              std::nullopt);
}

TEST(eventstream_decode_frame, duplicate_header) {
    EXPECT_EQ(frame_error(frame(str_hdr("a", "1") + str_hdr("a", "2"))), errc::duplicate_header);
    // Same name with different types is still a duplicate; names are case-sensitive.
    EXPECT_EQ(frame_error(frame(str_hdr("a", "1") + hdr("a", 0, ""))), errc::duplicate_header);
    EXPECT_EQ(frame_error(frame(str_hdr("a", "1") + str_hdr("A", "2"))), std::nullopt);
    // Structural errors anywhere in the block win over a duplicate.
    EXPECT_EQ(frame_error(frame(str_hdr("a", "1") + str_hdr("a", "2") + hdr("z", 12, ""))),
              errc::unknown_header_type);
}

TEST(eventstream_decode_frame, duplicate_among_many_headers) {
    // ~30000 distinct two-byte names fill most of the 128 KiB block (sorting path).
    std::string block;
    std::size_t count = 0;
    for (unsigned a = 1; a < 256 && block.size() + 8 < es::max_headers_size; ++a) {
        for (unsigned b = 0; b < 256 && block.size() + 8 < es::max_headers_size; ++b) {
            const char name[2] = {static_cast<char>(a), static_cast<char>(b)};
            block += hdr(std::string_view(name, 2), 0, "");
            ++count;
        }
    }
    ASSERT_GT(count, 20000u);
    const std::string wire = frame(block);
    auto r = es::decode_frame(bytes(wire));
    ASSERT_TRUE(r) << es::to_string(r.error());
    ASSERT_TRUE(r->frame);
    EXPECT_EQ(r->frame->to_message().headers.size(), count);
    const std::string dup = block + hdr(std::string_view("\x05\x07", 2), 1, "");
    EXPECT_EQ(frame_error(frame(dup)), errc::duplicate_header);
    // Twenty headers (just past the pairwise limit) with the duplicate at the ends.
    std::string twenty = str_hdr("same", "1");
    for (int i = 0; i < 18; ++i) twenty += str_hdr("h" + std::to_string(i), "v");
    EXPECT_EQ(frame_error(frame(twenty + str_hdr("other", "2"))), std::nullopt);
    EXPECT_EQ(frame_error(frame(twenty + str_hdr("same", "2"))), errc::duplicate_header);
}

// ---- decoder ---------------------------------------------------------------------------------

TEST(eventstream_decoder, whole_frames_are_viewed_in_place) {
    const std::string a = es::bedrock_event("chunk", "{\"n\":1}");
    const std::string b = es::bedrock_event("chunk", "{\"n\":2}");
    const std::string in = a + b;
    es::decoder dec;
    auto s1 = dec.feed(bytes(in));
    ASSERT_TRUE(s1);
    EXPECT_EQ(s1->consumed, a.size());  // never past the frame
    ASSERT_TRUE(s1->frame);
    EXPECT_EQ(s1->frame->wire().data(), bytes(in).data());
    EXPECT_EQ(s1->frame->payload(), "{\"n\":1}");
    EXPECT_EQ(dec.buffered(), 0u);
    auto s2 = dec.feed(bytes(in).subspan(a.size()));
    ASSERT_TRUE(s2);
    EXPECT_EQ(s2->consumed, b.size());
    ASSERT_TRUE(s2->frame);
    EXPECT_EQ(s2->frame->wire().data(), bytes(in).data() + a.size());
    EXPECT_EQ(s2->frame->payload(), "{\"n\":2}");
    EXPECT_EQ(dec.error(), std::nullopt);
}

TEST(eventstream_decoder, empty_input) {
    es::decoder dec;
    auto s = dec.feed(std::span<const std::byte>{});
    ASSERT_TRUE(s);
    EXPECT_EQ(s->consumed, 0u);
    EXPECT_FALSE(s->frame);
    EXPECT_EQ(dec.buffered(), 0u);
}

TEST(eventstream_decoder, split_frame_buffered_and_copied) {
    const std::string a = es::bedrock_event("chunk", "{\"text\":\"hello\"}");
    const std::string b = es::bedrock_exception("throttlingException", "{\"message\":\"slow\"}");
    const std::string in = a + b;
    es::decoder dec;
    auto s = dec.feed(std::string_view(in).substr(0, 5));  // inside the prelude
    ASSERT_TRUE(s);
    EXPECT_EQ(s->consumed, 5u);
    EXPECT_FALSE(s->frame);
    EXPECT_EQ(dec.buffered(), 5u);
    s = dec.feed(std::string_view(in).substr(5, 20));  // completes the prelude, into headers
    ASSERT_TRUE(s);
    EXPECT_EQ(s->consumed, 20u);
    EXPECT_EQ(dec.buffered(), 25u);
    // The rest of `a` and all of `b` in one piece: stops at the end of `a`.
    const std::string_view rest = std::string_view(in).substr(25);
    s = dec.feed(rest);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->consumed, a.size() - 25);
    ASSERT_TRUE(s->frame);
    EXPECT_EQ(text(s->frame->wire()), a);
    EXPECT_NE(s->frame->wire().data(), bytes(in).data());  // the decoder's copy
    EXPECT_EQ(s->frame->string_header(":event-type"), "chunk");
    EXPECT_EQ(dec.buffered(), 0u);
    s = dec.feed(rest.substr(a.size() - 25));
    ASSERT_TRUE(s);
    EXPECT_EQ(s->consumed, b.size());
    ASSERT_TRUE(s->frame);
    EXPECT_EQ(s->frame->string_header(":exception-type"), "throttlingException");
    EXPECT_EQ(dec.buffered(), 0u);
}

TEST(eventstream_decoder, frame_too_long_reported_after_prelude) {
    const std::string p = prelude(static_cast<std::uint32_t>(es::max_frame_size + 1), 0);
    es::decoder dec;
    for (std::size_t i = 0; i + 1 < p.size(); ++i) {
        auto s = dec.feed(std::string_view(p).substr(i, 1));
        ASSERT_TRUE(s) << i;
        EXPECT_EQ(s->consumed, 1u);
        EXPECT_EQ(dec.buffered(), i + 1);
    }
    auto s = dec.feed(std::string_view(p).substr(p.size() - 1));
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error(), errc::frame_too_long);
    EXPECT_EQ(dec.error(), errc::frame_too_long);
    // Whole prelude in one call, too.
    es::decoder dec2;
    auto s2 = dec2.feed(p);
    ASSERT_FALSE(s2);
    EXPECT_EQ(s2.error(), errc::frame_too_long);
}

TEST(eventstream_decoder, sticky_failure_and_reset) {
    std::string bad = es::bedrock_event("chunk", "{}");
    bad[bad.size() - 6] ^= 0x20;  // payload byte: message CRC fails
    const std::string good = es::bedrock_event("chunk", "{}");
    es::decoder dec;
    auto s = dec.feed(std::string_view(bad).substr(0, 13));
    ASSERT_TRUE(s);
    s = dec.feed(std::string_view(bad).substr(13));
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error(), errc::message_checksum_mismatch);
    for (int i = 0; i < 3; ++i) {
        auto again = dec.feed(good);
        ASSERT_FALSE(again);
        EXPECT_EQ(again.error(), errc::message_checksum_mismatch);
        EXPECT_EQ(dec.error(), errc::message_checksum_mismatch);
    }
    auto empty = dec.feed(std::string_view{});
    ASSERT_FALSE(empty);
    EXPECT_EQ(empty.error(), errc::message_checksum_mismatch);

    dec.reset();
    EXPECT_EQ(dec.error(), std::nullopt);
    EXPECT_EQ(dec.buffered(), 0u);
    auto ok = dec.feed(good);
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->consumed, good.size());
    EXPECT_TRUE(ok->frame);
}

TEST(eventstream_decoder, reset_drops_partial_frame) {
    const std::string good = es::bedrock_event("chunk", "{}");
    es::decoder dec;
    ASSERT_TRUE(dec.feed(std::string_view(good).substr(0, 30)));
    EXPECT_EQ(dec.buffered(), 30u);
    dec.reset();
    EXPECT_EQ(dec.buffered(), 0u);
    auto s = dec.feed(good);
    ASSERT_TRUE(s);
    ASSERT_TRUE(s->frame);
    EXPECT_EQ(s->frame->wire().data(), bytes(good).data());
}

TEST(eventstream_decoder, header_errors_on_split_frames) {
    const std::string f = frame(str_hdr("a", "1") + str_hdr("a", "2"), "x");
    es::decoder dec;
    ASSERT_TRUE(dec.feed(std::string_view(f).substr(0, 7)));
    auto s = dec.feed(std::string_view(f).substr(7));
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error(), errc::duplicate_header);
}

// ---- decode_all ------------------------------------------------------------------------------

TEST(eventstream_decode_all, frames_and_truncation) {
    const std::string a = es::bedrock_event("chunk", "{\"n\":1}");
    const std::string b = es::bedrock_error("InternalFailure", "boom");
    const std::string in = a + b;
    auto all = es::decode_all(in);
    ASSERT_TRUE(all);
    ASSERT_EQ(all->size(), 2u);
    EXPECT_EQ((*all)[0].string_header(":event-type"), "chunk");
    EXPECT_EQ((*all)[1].string_header(":error-message"), "boom");
    EXPECT_EQ((*all)[1].payload, "");

    auto none = es::decode_all(std::string_view{});
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->empty());

    for (std::size_t n = 1; n < in.size(); ++n) {
        auto r = es::decode_all(std::string_view(in).substr(0, n));
        if (n == a.size()) {
            ASSERT_TRUE(r);
            EXPECT_EQ(r->size(), 1u);
        } else {
            ASSERT_FALSE(r) << n;
            EXPECT_EQ(r.error(), errc::truncated_stream) << n;
        }
    }
}

TEST(eventstream_decode_all, reports_frame_errors) {
    const std::string a = es::bedrock_event("chunk", "{}");
    EXPECT_EQ(es::decode_all(a + prelude(15, 0)).error(), errc::frame_too_short);
    EXPECT_EQ(es::decode_all(a + frame(hdr("x", 10, ""))).error(), errc::unknown_header_type);
}

// ---- validate / encode -----------------------------------------------------------------------

TEST(eventstream_validate, errors) {
    auto one = [](std::string name, es::header_value v) {
        es::message m;
        m.headers.push_back({std::move(name), std::move(v)});
        return m;
    };
    EXPECT_EQ(es::validate(one("", true)), errc::header_name_empty);
    EXPECT_EQ(es::validate(one(std::string(256, 'n'), true)), errc::header_name_too_long);
    EXPECT_EQ(es::validate(one(std::string(255, 'n'), true)), std::nullopt);
    EXPECT_EQ(es::validate(one("s", std::string(32768, 'v'))), errc::header_value_too_long);
    EXPECT_EQ(es::validate(one("s", std::string(32767, 'v'))), std::nullopt);
    EXPECT_EQ(es::validate(one("b", es::byte_array(32768))), errc::header_value_too_long);
    EXPECT_EQ(es::validate(one("b", es::byte_array(32767))), std::nullopt);

    es::message dup;
    dup.headers = {{"a", true}, {"b", true}, {"a", std::string("x")}};
    EXPECT_EQ(es::validate(dup), errc::duplicate_header);
    for (int i = 0; i < 30; ++i) dup.headers.push_back({"h" + std::to_string(i), true});
    EXPECT_EQ(es::validate(dup), errc::duplicate_header);  // many headers: sorted check
    dup.headers[2].name = "c";
    EXPECT_EQ(es::validate(dup), std::nullopt);
    // Per-header errors come first, wherever they are.
    dup.headers.push_back({"a", true});
    dup.headers.push_back({"", true});
    EXPECT_EQ(es::validate(dup), errc::header_name_empty);

    es::message big;
    for (int i = 0; i < 5; ++i) {
        big.headers.push_back({"h" + std::to_string(i), std::string(32767, 'v')});
    }
    EXPECT_EQ(es::validate(big), errc::headers_too_long);
    // Each costs 1 + 2 + 1 + 2 + 32767 bytes: four already exceed 128 KiB, three fit.
    big.headers.pop_back();
    EXPECT_EQ(es::validate(big), errc::headers_too_long);
    big.headers.pop_back();
    EXPECT_EQ(es::validate(big), std::nullopt);
    big.payload.assign(es::max_frame_size, 'p');
    EXPECT_EQ(es::validate(big), errc::frame_too_long);
}

TEST(eventstream_validate, encode_refuses_invalid_message) {
    es::message m;
    m.headers = {{"", true}};
    std::string out = "unchanged";
    EXPECT_DEBUG_DEATH(out = es::encode(m), "");
#ifdef NDEBUG
    EXPECT_EQ(out, "");
#endif
}

// ---- Bedrock builders ------------------------------------------------------------------------

TEST(eventstream_bedrock, event_exception_error) {
    auto check = [](const std::string& wire,
                    const std::vector<std::pair<std::string, std::string>>& headers,
                    std::string_view payload) {
        auto all = es::decode_all(wire);
        ASSERT_TRUE(all);
        ASSERT_EQ(all->size(), 1u);
        const es::message& m = all->front();
        ASSERT_EQ(m.headers.size(), headers.size());
        for (std::size_t i = 0; i < headers.size(); ++i) {
            EXPECT_EQ(m.headers[i].name, headers[i].first);
            EXPECT_EQ(m.headers[i].value, es::header_value(headers[i].second));
        }
        EXPECT_EQ(m.payload, payload);
        EXPECT_EQ(es::encode(m), wire);
    };
    check(es::bedrock_event("messageStart", "{\"role\":\"assistant\"}"),
          {{":event-type", "messageStart"},
           {":content-type", "application/json"},
           {":message-type", "event"}},
          "{\"role\":\"assistant\"}");
    check(es::bedrock_exception("throttlingException", "{\"message\":\"m\"}"),
          {{":exception-type", "throttlingException"},
           {":content-type", "application/json"},
           {":message-type", "exception"}},
          "{\"message\":\"m\"}");
    check(es::bedrock_error("InternalFailure", "oops"),
          {{":error-code", "InternalFailure"},
           {":error-message", "oops"},
           {":message-type", "error"}},
          "");
}

TEST(eventstream_bedrock, limits_give_empty_string) {
    EXPECT_EQ(es::bedrock_event(std::string(32768, 'e'), "{}"), "");
    EXPECT_EQ(es::bedrock_exception(std::string(40000, 'e'), "{}"), "");
    EXPECT_EQ(es::bedrock_error("code", std::string(32768, 'm')), "");
    EXPECT_EQ(es::bedrock_event("chunk", std::string(es::max_frame_size, 'p')), "");
    EXPECT_FALSE(es::bedrock_event(std::string(32767, 'e'), "{}").empty());
}

}  // namespace
