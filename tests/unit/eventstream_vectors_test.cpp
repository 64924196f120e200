// The event-stream codec against the reference vectors in tests/reference/eventstream,
// discovered at run time (see NOTES.md there):
//   aws-sdk-go-testdata/encoded/{positive,negative}/X  binary frames
//   aws-sdk-go-testdata/decoded/positive/X             JSON description of the frame
//   aws-sdk-go-testdata/decoded/negative/X             the expected error text
//   bedrock-frames/X.bin + X.json                      concatenated frames and their contents
// Expected values are only ever read from the files. Every vector is also fed to the
// incremental decoder split at every byte offset and one byte at a time.

#include "bgw/aws/eventstream.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "unit/slurp.hpp"
#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace bgw::aws::eventstream {
// Failure messages show the error text rather than a raw byte.
inline void PrintTo(errc e, std::ostream* os) { *os << to_string(e); }
}  // namespace bgw::aws::eventstream

namespace {

namespace fs = std::filesystem;
namespace es = bgw::aws::eventstream;

// ---- helpers ---------------------------------------------------------------------------------

using bgw::test::read_or_fail;

fs::path reference(std::string_view sub) {
    return fs::path(BGW_REFERENCE_DIR) / "eventstream" / sub;
}

std::string trim(std::string_view s) {
    auto ws = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
    while (!s.empty() && ws(s.front())) s.remove_prefix(1);
    while (!s.empty() && ws(s.back())) s.remove_suffix(1);
    return std::string(s);
}

/// Standard base64 (RFC 4648, with padding); nullopt on anything else.
std::optional<std::string> base64_decode(std::string_view in) {
    auto sextet = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    if (in.size() % 4 != 0) return std::nullopt;
    std::string out;
    for (std::size_t i = 0; i < in.size(); i += 4) {
        const bool last = i + 4 == in.size();
        const int pad = last ? (in[i + 3] == '=') + (in[i + 2] == '=') : 0;
        unsigned v = 0;
        for (std::size_t j = 0; j < 4; ++j) {
            const int s = j >= 4 - static_cast<std::size_t>(pad) ? 0 : sextet(in[i + j]);
            if (s < 0) return std::nullopt;
            v = (v << 6) | static_cast<unsigned>(s);
        }
        out.push_back(static_cast<char>((v >> 16) & 0xff));
        if (pad < 2) out.push_back(static_cast<char>((v >> 8) & 0xff));
        if (pad < 1) out.push_back(static_cast<char>(v & 0xff));
    }
    return out;
}

std::span<const std::byte> bytes(std::string_view s) {
    return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

std::string text(std::span<const std::byte> s) {
    return {reinterpret_cast<const char*>(s.data()), s.size()};
}

template <class T>
std::string text_of(const T& bytes_like) {
    std::string out;
    for (auto b : bytes_like) out.push_back(static_cast<char>(b));
    return out;
}

enum class vector_kind { positive, negative, bedrock };

struct vector_case {
    std::string name;
    vector_kind kind;
    fs::path wire;      ///< the binary frame(s)
    fs::path expected;  ///< decoded JSON, error text, or the .json next to the .bin
};

void PrintTo(const vector_case& c, std::ostream* os) { *os << c.name; }

std::string test_name(const testing::TestParamInfo<vector_case>& info) {
    std::string n = info.param.name;
    for (char& c : n) {
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    }
    return n;
}

std::vector<fs::path> files_in(const fs::path& dir) {
    std::vector<fs::path> out;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return out;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->is_regular_file()) out.push_back(it->path());
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::vector<vector_case> sdk_cases(vector_kind kind) {
    const std::string sub = kind == vector_kind::positive ? "positive" : "negative";
    const fs::path root = reference("aws-sdk-go-testdata");
    std::vector<vector_case> cases;
    for (const auto& p : files_in(root / "encoded" / sub)) {
        const std::string leaf = p.filename().string();
        cases.push_back({sub + "_" + leaf, kind, p, root / "decoded" / sub / leaf});
    }
    return cases;
}

std::vector<vector_case> bedrock_cases() {
    std::vector<vector_case> cases;
    for (const auto& p : files_in(reference("bedrock-frames"))) {
        if (p.extension() != ".bin") continue;
        fs::path json = p;
        json.replace_extension(".json");
        cases.push_back({p.stem().string(), vector_kind::bedrock, p, json});
    }
    return cases;
}

std::vector<vector_case> all_cases() {
    std::vector<vector_case> all = sdk_cases(vector_kind::positive);
    for (auto& c : sdk_cases(vector_kind::negative)) all.push_back(std::move(c));
    for (auto& c : bedrock_cases()) all.push_back(std::move(c));
    return all;
}

bool parse_json(const std::string& text, rapidjson::Document& doc) {
    doc.Parse(text.data(), text.size());
    return !doc.HasParseError();
}

/// Compares one decoded header with its aws-sdk-go JSON description `{name, type, value}`
/// (string/bytes/uuid base64, timestamp in ms, byte signed).
void expect_sdk_header(const rapidjson::Value& j, const es::header& h) {
    ASSERT_TRUE(j.IsObject() && j.HasMember("name") && j.HasMember("type") && j.HasMember("value"));
    EXPECT_EQ(h.name, j["name"].GetString());
    const int type = j["type"].GetInt();
    ASSERT_EQ(static_cast<int>(es::type_of(h.value)), type) << h.name;
    const rapidjson::Value& v = j["value"];
    using es::header_type;
    switch (static_cast<header_type>(type)) {
        case header_type::bool_true:
        case header_type::bool_false:
            EXPECT_EQ(std::get<bool>(h.value), v.GetBool()) << h.name;
            break;
        case header_type::byte:
            EXPECT_EQ(std::get<std::int8_t>(h.value), v.GetInt64()) << h.name;
            break;
        case header_type::int16:
            EXPECT_EQ(std::get<std::int16_t>(h.value), v.GetInt64()) << h.name;
            break;
        case header_type::int32:
            EXPECT_EQ(std::get<std::int32_t>(h.value), v.GetInt64()) << h.name;
            break;
        case header_type::int64:
            EXPECT_EQ(std::get<std::int64_t>(h.value), v.GetInt64()) << h.name;
            break;
        case header_type::timestamp:
            EXPECT_EQ(std::get<es::timestamp>(h.value).time_since_epoch().count(), v.GetInt64())
                << h.name;
            break;
        case header_type::byte_array:
            EXPECT_EQ(text_of(std::get<es::byte_array>(h.value)), base64_decode(v.GetString()))
                << h.name;
            break;
        case header_type::string:
            EXPECT_EQ(std::get<std::string>(h.value), base64_decode(v.GetString())) << h.name;
            break;
        case header_type::uuid:
            EXPECT_EQ(text_of(std::get<es::uuid>(h.value)), base64_decode(v.GetString())) << h.name;
            break;
        default:
            ADD_FAILURE() << "unknown type " << type << " in " << h.name;
    }
}

/// The messages a bedrock-frames JSON describes (string headers as plain text, payload_utf8).
std::optional<std::vector<es::message>> bedrock_messages(const rapidjson::Document& doc) {
    if (!doc.IsArray()) return std::nullopt;
    std::vector<es::message> out;
    for (const auto& jm : doc.GetArray()) {
        if (!jm.IsObject() || !jm.HasMember("headers") || !jm.HasMember("payload_utf8")) {
            return std::nullopt;
        }
        es::message m;
        for (const auto& jh : jm["headers"].GetArray()) {
            if (jh["type"].GetInt() != static_cast<int>(es::header_type::string)) {
                ADD_FAILURE() << "bedrock-frames JSON: only string headers are described";
                return std::nullopt;
            }
            m.headers.push_back(
                {jh["name"].GetString(),
                 std::string(jh["value"].GetString(), jh["value"].GetStringLength())});
        }
        m.payload.assign(jm["payload_utf8"].GetString(), jm["payload_utf8"].GetStringLength());
        out.push_back(std::move(m));
    }
    return out;
}

// ---- aws-sdk-go positive vectors -------------------------------------------------------------

class eventstream_sdk_positive : public testing::TestWithParam<vector_case> {};

TEST_P(eventstream_sdk_positive, decodes_to_description_and_reencodes) {
    const vector_case& c = GetParam();
    const std::string wire = read_or_fail(c.wire);
    const std::string json = read_or_fail(c.expected);
    ASSERT_FALSE(HasFailure());
    rapidjson::Document doc;
    ASSERT_TRUE(parse_json(json, doc) && doc.IsObject()) << c.expected.string();

    auto r = es::decode_frame(bytes(wire));
    ASSERT_TRUE(r) << es::to_string(r.error());
    ASSERT_TRUE(r->frame);
    EXPECT_EQ(r->consumed, wire.size());
    const es::frame_view& f = *r->frame;
    EXPECT_EQ(static_cast<std::int64_t>(f.total_length()), doc["total_length"].GetInt64());
    EXPECT_EQ(static_cast<std::int64_t>(f.headers_length()), doc["headers_length"].GetInt64());
    EXPECT_EQ(static_cast<std::int32_t>(f.prelude_crc()), doc["prelude_crc"].GetInt64());
    EXPECT_EQ(static_cast<std::int32_t>(f.message_crc()), doc["message_crc"].GetInt64());
    EXPECT_EQ(std::optional<std::string>(std::string(f.payload())),
              base64_decode(doc["payload"].GetString()));

    const es::message m = f.to_message();
    const auto& jheaders = doc["headers"];
    ASSERT_TRUE(jheaders.IsArray());
    ASSERT_EQ(m.headers.size(), jheaders.Size());
    for (rapidjson::SizeType i = 0; i < jheaders.Size(); ++i) {
        expect_sdk_header(jheaders[i], m.headers[i]);
        // The allocation-free scan agrees with the owning copy.
        EXPECT_EQ(f.string_header(m.headers[i].name), m.string_header(m.headers[i].name));
    }

    auto all = es::decode_all(wire);
    ASSERT_TRUE(all) << es::to_string(all.error());
    ASSERT_EQ(all->size(), 1u);
    EXPECT_EQ(all->front(), m);
    EXPECT_EQ(es::validate(m), std::nullopt);
    EXPECT_EQ(es::encode(m), wire) << "re-encoding is not byte-identical";
}

INSTANTIATE_TEST_SUITE_P(aws_sdk_go,
                         eventstream_sdk_positive,
                         testing::ValuesIn(sdk_cases(vector_kind::positive)),
                         test_name);

// ---- aws-sdk-go negative vectors -------------------------------------------------------------

class eventstream_sdk_negative : public testing::TestWithParam<vector_case> {};

TEST_P(eventstream_sdk_negative, rejected_with_expected_error) {
    const vector_case& c = GetParam();
    const std::string wire = read_or_fail(c.wire);
    const std::string expected = trim(read_or_fail(c.expected));
    ASSERT_FALSE(HasFailure());
    ASSERT_FALSE(expected.empty());

    auto r = es::decode_frame(bytes(wire));
    ASSERT_FALSE(r) << "accepted a corrupt frame";
    EXPECT_EQ(es::to_string(r.error()), expected);
    auto all = es::decode_all(wire);
    ASSERT_FALSE(all);
    EXPECT_EQ(es::to_string(all.error()), expected);
    es::decoder dec;
    auto s = dec.feed(wire);
    ASSERT_FALSE(s);
    EXPECT_EQ(es::to_string(s.error()), expected);
}

INSTANTIATE_TEST_SUITE_P(aws_sdk_go,
                         eventstream_sdk_negative,
                         testing::ValuesIn(sdk_cases(vector_kind::negative)),
                         test_name);

// ---- bedrock-frames --------------------------------------------------------------------------

class eventstream_bedrock_frames : public testing::TestWithParam<vector_case> {};

TEST_P(eventstream_bedrock_frames, decodes_to_description_and_reencodes) {
    const vector_case& c = GetParam();
    const std::string wire = read_or_fail(c.wire);
    const std::string json = read_or_fail(c.expected);
    ASSERT_FALSE(HasFailure());
    rapidjson::Document doc;
    ASSERT_TRUE(parse_json(json, doc)) << c.expected.string();
    const auto expected = bedrock_messages(doc);
    ASSERT_TRUE(expected) << "unreadable " << c.expected.string();
    ASSERT_FALSE(expected->empty());

    auto all = es::decode_all(wire);
    ASSERT_TRUE(all) << es::to_string(all.error());
    ASSERT_EQ(all->size(), expected->size());
    std::string reencoded;
    std::span<const std::byte> rest = bytes(wire);
    for (std::size_t i = 0; i < expected->size(); ++i) {
        SCOPED_TRACE("frame " + std::to_string(i));
        const es::message& m = (*all)[i];
        EXPECT_EQ(m, (*expected)[i]);
        const std::string frame = es::encode(m);
        reencoded += frame;

        // The builders reproduce the service's frames from the same fields.
        auto step = es::decode_frame(rest);
        ASSERT_TRUE(step && step->frame);
        rest = rest.subspan(step->consumed);
        const es::frame_view& f = *step->frame;
        EXPECT_EQ(text(f.wire()), frame);
        const auto type = f.string_header(":message-type");
        ASSERT_TRUE(type);
        std::string built;
        if (*type == "event") {
            built = es::bedrock_event(f.string_header(":event-type").value_or(""), f.payload());
        } else if (*type == "exception") {
            built =
                es::bedrock_exception(f.string_header(":exception-type").value_or(""), f.payload());
        } else if (*type == "error") {
            built = es::bedrock_error(f.string_header(":error-code").value_or(""),
                                      f.string_header(":error-message").value_or(""));
        }
        EXPECT_EQ(built, frame) << "builder for :message-type " << *type;
    }
    EXPECT_TRUE(rest.empty());
    EXPECT_EQ(reencoded, wire) << "re-encoding is not byte-identical";
}

INSTANTIATE_TEST_SUITE_P(bedrock,
                         eventstream_bedrock_frames,
                         testing::ValuesIn(bedrock_cases()),
                         test_name);

// ---- every split through the incremental decoder ---------------------------------------------

/// What feeding `pieces` in order yields: the frames (wire bytes) and the error, if any.
struct fed {
    std::vector<std::string> frames;
    std::optional<es::errc> error;
    std::size_t buffered_at_end = 0;
};

fed feed_pieces(const std::vector<std::string_view>& pieces) {
    fed out;
    es::decoder dec;
    for (std::string_view piece : pieces) {
        for (auto in = bytes(piece); !in.empty();) {
            auto step = dec.feed(in);
            if (!step) {
                out.error = step.error();
                EXPECT_EQ(dec.error(), step.error());
                auto again = dec.feed(in);  // sticky
                EXPECT_FALSE(again);
                if (!again) {
                    EXPECT_EQ(again.error(), step.error());
                }
                out.buffered_at_end = dec.buffered();
                return out;
            }
            if (step->consumed == 0) {
                ADD_FAILURE() << "consumed nothing of non-empty input";
                return out;
            }
            in = in.subspan(step->consumed);
            if (step->frame) {
                out.frames.push_back(text(step->frame->wire()));
                EXPECT_EQ(step->frame->to_message().payload, step->frame->payload());
            }
        }
    }
    out.buffered_at_end = dec.buffered();
    return out;
}

class eventstream_split_property : public testing::TestWithParam<vector_case> {};

TEST_P(eventstream_split_property, every_split_yields_same_result) {
    const vector_case& c = GetParam();
    const std::string wire = read_or_fail(c.wire);
    ASSERT_FALSE(HasFailure());
    ASSERT_FALSE(wire.empty());

    // Reference: the stateless decoder over the whole body.
    std::vector<std::string> frames;
    std::optional<es::errc> error;
    for (auto rest = bytes(wire); !rest.empty();) {
        auto step = es::decode_frame(rest);
        if (!step) {
            error = step.error();
            break;
        }
        ASSERT_TRUE(step->frame) << "vector ends inside a frame";
        frames.push_back(text(step->frame->wire()));
        rest = rest.subspan(step->consumed);
    }
    EXPECT_EQ(error.has_value(), c.kind == vector_kind::negative);

    auto check = [&](const fed& got, const std::string& how) {
        EXPECT_EQ(got.error, error) << how;
        if (!error) {
            EXPECT_EQ(got.frames, frames) << how;
            EXPECT_EQ(got.buffered_at_end, 0u) << how;
        }
    };
    const std::string_view all(wire);
    for (std::size_t k = 0; k <= wire.size(); ++k) {
        check(feed_pieces({all.substr(0, k), all.substr(k)}), "split at " + std::to_string(k));
        if (HasFailure()) return;
    }
    std::vector<std::string_view> single;
    for (std::size_t i = 0; i < wire.size(); ++i) single.push_back(all.substr(i, 1));
    check(feed_pieces(single), "one byte at a time");
    // Three pieces, with the cuts stepping through the body.
    for (std::size_t a = 0; a <= wire.size(); a += 7) {
        for (std::size_t b = a; b <= wire.size(); b += 13) {
            check(feed_pieces({all.substr(0, a), all.substr(a, b - a), all.substr(b)}),
                  "cuts at " + std::to_string(a) + "," + std::to_string(b));
            if (HasFailure()) return;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(all_vectors,
                         eventstream_split_property,
                         testing::ValuesIn(all_cases()),
                         test_name);

// A missing, empty or partly copied reference directory must fail, not pass with fewer cases
// (an empty suite also fails as GoogleTest's UninstantiatedParameterizedTestSuite). The
// minimums are what tests/reference carries (its README).
TEST(eventstream_vectors, reference_vectors_present) {
    EXPECT_GE(sdk_cases(vector_kind::positive).size(), 5u) << BGW_REFERENCE_DIR;
    EXPECT_GE(sdk_cases(vector_kind::negative).size(), 4u) << BGW_REFERENCE_DIR;
    EXPECT_GE(bedrock_cases().size(), 6u) << BGW_REFERENCE_DIR;
    for (const auto& c : all_cases()) {
        EXPECT_TRUE(fs::is_regular_file(c.expected)) << "no description for " << c.name;
    }
}

}  // namespace
