#include "bgw/aws/eventstream.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <boost/assert.hpp>
#include <boost/crc.hpp>

namespace bgw::aws::eventstream {
namespace {

// ---- byte helpers (byte by byte: frames sit at any alignment) --------------------------------

std::uint64_t read_be(const std::byte* p, std::size_t n) noexcept {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v = (v << 8) | std::to_integer<std::uint64_t>(p[i]);
    return v;
}

std::uint32_t read_be32(const std::byte* p) noexcept {
    return static_cast<std::uint32_t>(read_be(p, 4));
}

void put_be(std::string& out, std::uint64_t v, std::size_t n) {
    for (std::size_t i = n; i-- > 0;) out.push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}

std::uint32_t crc32(const void* data, std::size_t n) noexcept {
    boost::crc_32_type crc;
    crc.process_bytes(data, n);
    return crc.checksum();
}

std::string_view as_chars(std::span<const std::byte> s) noexcept {
    return {reinterpret_cast<const char*>(s.data()), s.size()};
}

std::span<const std::byte> bytes_of(std::string_view s) noexcept {
    return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

// ---- header block parsing --------------------------------------------------------------------

constexpr std::uint8_t max_type_byte = static_cast<std::uint8_t>(header_type::uuid);

/// One header as it sits in the block: `value` excludes the u16 length of types 6 and 7.
struct raw_header {
    std::string_view name;
    header_type type{};
    std::span<const std::byte> value;
};

/// Size of the fixed-width value of `t`, or 0 for the variable-length types 6 and 7.
std::size_t fixed_value_size(header_type t) noexcept {
    switch (t) {
        case header_type::bool_true:
        case header_type::bool_false:
            return 0;
        case header_type::byte:
            return 1;
        case header_type::int16:
            return 2;
        case header_type::int32:
            return 4;
        case header_type::int64:
        case header_type::timestamp:
            return 8;
        case header_type::uuid:
            return 16;
        case header_type::byte_array:
        case header_type::string:
            return 0;
    }
    return 0;
}

/// Reads the header at the front of `block` into `out` and advances `block` past it.
/// Errors in wire order: header_truncated, header_name_empty, unknown_header_type,
/// header_value_too_long.
std::optional<errc> next_header(std::span<const std::byte>& block, raw_header& out) noexcept {
    std::size_t pos = 0;
    if (block.size() < 1) return errc::header_truncated;
    const std::size_t name_len = std::to_integer<std::size_t>(block[0]);
    pos = 1;
    if (name_len == 0) return errc::header_name_empty;
    if (block.size() - pos < name_len) return errc::header_truncated;
    out.name = as_chars(block.subspan(pos, name_len));
    pos += name_len;
    if (block.size() - pos < 1) return errc::header_truncated;
    const auto type_byte = std::to_integer<std::uint8_t>(block[pos]);
    pos += 1;
    if (type_byte > max_type_byte) return errc::unknown_header_type;
    out.type = static_cast<header_type>(type_byte);
    std::size_t value_len = fixed_value_size(out.type);
    if (out.type == header_type::byte_array || out.type == header_type::string) {
        if (block.size() - pos < 2) return errc::header_truncated;
        value_len = static_cast<std::size_t>(read_be(block.data() + pos, 2));
        pos += 2;
        if (value_len > max_header_value_size) return errc::header_value_too_long;
    }
    if (block.size() - pos < value_len) return errc::header_truncated;
    out.value = block.subspan(pos, value_len);
    pos += value_len;
    block = block.subspan(pos);
    return std::nullopt;
}

template <class T>
T signed_value(std::span<const std::byte> v) noexcept {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(read_be(v.data(), sizeof(T))));
}

header_value to_value(const raw_header& h) {
    switch (h.type) {
        case header_type::bool_true:
            return true;
        case header_type::bool_false:
            return false;
        case header_type::byte:
            return signed_value<std::int8_t>(h.value);
        case header_type::int16:
            return signed_value<std::int16_t>(h.value);
        case header_type::int32:
            return signed_value<std::int32_t>(h.value);
        case header_type::int64:
            return signed_value<std::int64_t>(h.value);
        case header_type::byte_array:
            return byte_array(h.value.begin(), h.value.end());
        case header_type::string:
            return std::string(as_chars(h.value));
        case header_type::timestamp:
            return timestamp{std::chrono::milliseconds{signed_value<std::int64_t>(h.value)}};
        case header_type::uuid: {
            uuid u{};
            std::copy(h.value.begin(), h.value.end(), u.begin());
            return u;
        }
    }
    return false;  // unreachable: the type byte was checked
}

/// Up to this many names, duplicates are found by comparing every pair.
constexpr std::size_t pairwise_limit = 16;

bool has_duplicate_pairwise(std::span<const std::byte> block) noexcept {
    raw_header a;
    raw_header b;
    for (auto outer = block; !outer.empty();) {
        (void)next_header(outer, a);
        for (auto inner = outer; !inner.empty();) {
            (void)next_header(inner, b);
            if (a.name == b.name) return true;
        }
    }
    return false;
}

/// Precondition: every header of `block` parses. Sorts the names when there are many, so a
/// block of tens of thousands of tiny headers costs O(n log n) rather than O(n^2); falls back
/// to pairwise comparison if that scratch space cannot be had (nothing is thrown).
bool has_duplicate_name(std::span<const std::byte> block, std::size_t count) noexcept {
    if (count < 2) return false;
    if (count > pairwise_limit) {
        std::unique_ptr<std::string_view[]> names(new (std::nothrow) std::string_view[count]);
        if (names) {
            raw_header h;
            std::size_t n = 0;
            for (auto rest = block; !rest.empty() && n < count;) {
                (void)next_header(rest, h);
                names[n++] = h.name;
            }
            std::sort(names.get(), names.get() + n);
            return std::adjacent_find(names.get(), names.get() + n) != names.get() + n;
        }
    }
    return has_duplicate_pairwise(block);
}

// ---- encoding --------------------------------------------------------------------------------

std::size_t encoded_value_size(const header_value& v) noexcept {
    return std::visit(
        [](const auto& x) -> std::size_t {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>) {
                return 0;
            } else if constexpr (std::is_same_v<T, byte_array> || std::is_same_v<T, std::string>) {
                return 2 + x.size();
            } else if constexpr (std::is_same_v<T, timestamp>) {
                return 8;
            } else if constexpr (std::is_same_v<T, uuid>) {
                return x.size();
            } else {
                return sizeof(T);
            }
        },
        v);
}

std::size_t variable_value_size(const header_value& v) noexcept {
    if (const auto* s = std::get_if<std::string>(&v)) return s->size();
    if (const auto* b = std::get_if<byte_array>(&v)) return b->size();
    return 0;
}

void put_value(std::string& out, const header_value& v) {
    std::visit(
        [&out](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>) {
                // the type byte carries the value
            } else if constexpr (std::is_same_v<T, byte_array>) {
                put_be(out, x.size(), 2);
                for (std::byte b : x) out.push_back(static_cast<char>(b));
            } else if constexpr (std::is_same_v<T, std::string>) {
                put_be(out, x.size(), 2);
                out.append(x);
            } else if constexpr (std::is_same_v<T, timestamp>) {
                put_be(out, static_cast<std::uint64_t>(x.time_since_epoch().count()), 8);
            } else if constexpr (std::is_same_v<T, uuid>) {
                for (std::byte b : x) out.push_back(static_cast<char>(b));
            } else {
                using U = std::make_unsigned_t<T>;
                put_be(out, static_cast<U>(x), sizeof(T));
            }
        },
        v);
}

std::size_t header_block_size(const message& m) noexcept {
    std::size_t n = 0;
    for (const auto& h : m.headers) n += 1 + h.name.size() + 1 + encoded_value_size(h.value);
    return n;
}

/// `encode` without the debug assertion: empty when `m` is not encodable.
std::string encode_checked(const message& m) {
    if (validate(m)) return {};
    const std::size_t headers_len = header_block_size(m);
    const std::size_t total = min_frame_size + headers_len + m.payload.size();
    std::string out;
    out.reserve(total);
    put_be(out, total, 4);
    put_be(out, headers_len, 4);
    put_be(out, crc32(out.data(), 8), 4);
    for (const auto& h : m.headers) {
        out.push_back(static_cast<char>(h.name.size()));
        out.append(h.name);
        out.push_back(static_cast<char>(type_of(h.value)));
        put_value(out, h.value);
    }
    out.append(m.payload);
    put_be(out, crc32(out.data(), out.size()), 4);
    return out;
}

std::string three_string_headers(std::string_view n1,
                                 std::string_view v1,
                                 std::string_view n2,
                                 std::string_view v2,
                                 std::string_view message_type,
                                 std::string_view payload) {
    message m;
    m.headers.reserve(3);
    m.headers.push_back({std::string(n1), std::string(v1)});
    m.headers.push_back({std::string(n2), std::string(v2)});
    m.headers.push_back({":message-type", std::string(message_type)});
    m.payload = payload;
    return encode_checked(m);
}

}  // namespace

// ---- errors ----------------------------------------------------------------------------------

std::string_view to_string(errc e) noexcept {
    switch (e) {
        case errc::prelude_checksum_mismatch:
            return "Prelude checksum mismatch";
        case errc::message_checksum_mismatch:
            return "Message checksum mismatch";
        case errc::frame_too_short:
            return "Frame shorter than the 16-byte minimum";
        case errc::frame_too_long:
            return "Frame longer than the 24 MiB maximum";
        case errc::headers_too_long:
            return "Header block longer than the 128 KiB maximum";
        case errc::headers_exceed_frame:
            return "Header block longer than the frame";
        case errc::header_truncated:
            return "Header runs past the end of the header block";
        case errc::header_name_empty:
            return "Header name is empty";
        case errc::header_name_too_long:
            return "Header name longer than 255 bytes";
        case errc::header_value_too_long:
            return "Header value longer than 32767 bytes";
        case errc::unknown_header_type:
            return "Unknown header value type";
        case errc::duplicate_header:
            return "Duplicate header name";
        case errc::truncated_stream:
            return "Stream ends inside a frame";
    }
    return "Unknown event-stream error";
}

void throw_exception_from_error(const errc& e, const boost::source_location& /*loc*/) {
    throw std::logic_error(std::string(to_string(e)));
}

// ---- header values ---------------------------------------------------------------------------

header_type type_of(const header_value& v) noexcept {
    return std::visit(
        [](const auto& x) -> header_type {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>) {
                return x ? header_type::bool_true : header_type::bool_false;
            } else if constexpr (std::is_same_v<T, std::int8_t>) {
                return header_type::byte;
            } else if constexpr (std::is_same_v<T, std::int16_t>) {
                return header_type::int16;
            } else if constexpr (std::is_same_v<T, std::int32_t>) {
                return header_type::int32;
            } else if constexpr (std::is_same_v<T, std::int64_t>) {
                return header_type::int64;
            } else if constexpr (std::is_same_v<T, byte_array>) {
                return header_type::byte_array;
            } else if constexpr (std::is_same_v<T, std::string>) {
                return header_type::string;
            } else if constexpr (std::is_same_v<T, timestamp>) {
                return header_type::timestamp;
            } else {
                static_assert(std::is_same_v<T, uuid>);
                return header_type::uuid;
            }
        },
        v);
}

const header* message::find(std::string_view name) const noexcept {
    for (const auto& h : headers) {
        if (h.name == name) return &h;
    }
    return nullptr;
}

std::optional<std::string_view> message::string_header(std::string_view name) const noexcept {
    const header* h = find(name);
    if (h == nullptr) return std::nullopt;
    if (const auto* s = std::get_if<std::string>(&h->value)) return std::string_view(*s);
    return std::nullopt;
}

// ---- frame_view ------------------------------------------------------------------------------

std::uint32_t frame_view::total_length() const noexcept { return read_be32(wire_.data()); }

std::uint32_t frame_view::headers_length() const noexcept { return read_be32(wire_.data() + 4); }

std::uint32_t frame_view::prelude_crc() const noexcept { return read_be32(wire_.data() + 8); }

std::uint32_t frame_view::message_crc() const noexcept {
    return read_be32(wire_.data() + wire_.size() - 4);
}

std::span<const std::byte> frame_view::header_block() const noexcept {
    return wire_.subspan(prelude_size, headers_length());
}

std::string_view frame_view::payload() const noexcept {
    const std::size_t start = prelude_size + headers_length();
    return as_chars(wire_.subspan(start, wire_.size() - 4 - start));
}

std::optional<std::string_view> frame_view::string_header(std::string_view name) const noexcept {
    raw_header h;
    for (auto rest = header_block(); !rest.empty();) {
        if (next_header(rest, h)) return std::nullopt;  // cannot happen for a validated frame
        if (h.name == name) {
            if (h.type == header_type::string) return as_chars(h.value);
            return std::nullopt;
        }
    }
    return std::nullopt;
}

message frame_view::to_message() const {
    message m;
    raw_header h;
    for (auto rest = header_block(); !rest.empty();) {
        if (next_header(rest, h)) break;  // cannot happen for a validated frame
        m.headers.push_back({std::string(h.name), to_value(h)});
    }
    m.payload = payload();
    return m;
}

// ---- decoding --------------------------------------------------------------------------------

codec_result<decode_step> decode_frame(std::span<const std::byte> in) noexcept {
    if (in.size() < prelude_size) return decode_step{};
    const std::uint32_t total = read_be32(in.data());
    const std::uint32_t headers_len = read_be32(in.data() + 4);
    if (crc32(in.data(), 8) != read_be32(in.data() + 8)) return errc::prelude_checksum_mismatch;
    if (total < min_frame_size) return errc::frame_too_short;
    if (total > max_frame_size) return errc::frame_too_long;
    if (headers_len > max_headers_size) return errc::headers_too_long;
    if (headers_len > total - min_frame_size) return errc::headers_exceed_frame;
    if (in.size() < total) return decode_step{};

    const auto frame = in.first(total);
    if (crc32(frame.data(), total - 4) != read_be32(frame.data() + total - 4)) {
        return errc::message_checksum_mismatch;
    }
    const auto block = frame.subspan(prelude_size, headers_len);
    std::size_t count = 0;
    raw_header h;
    for (auto rest = block; !rest.empty(); ++count) {
        if (auto e = next_header(rest, h)) return *e;
    }
    if (has_duplicate_name(block, count)) return errc::duplicate_header;
    return decode_step{total, frame_view(frame)};
}

codec_result<decode_step> decoder::feed(std::span<const std::byte> in) {
    if (failed_) return *failed_;
    if (complete_) {
        buffer_.clear();
        frame_size_ = 0;
        complete_ = false;
    }
    if (in.empty()) return decode_step{};

    auto fail = [this](errc e) -> codec_result<decode_step> {
        failed_ = e;
        buffer_.clear();
        frame_size_ = 0;
        return e;
    };

    if (buffer_.empty()) {
        // Nothing held: a frame that arrives whole is viewed in place.
        auto step = decode_frame(in);
        if (!step) return fail(step.error());
        if (step->frame) return step;
        // Incomplete, so all of `in` belongs to this frame (its prelude, if complete, is valid).
        if (in.size() >= prelude_size) frame_size_ = read_be32(in.data());
        buffer_.assign(in.begin(), in.end());
        return decode_step{in.size(), std::nullopt};
    }

    std::size_t used = 0;
    if (frame_size_ == 0) {
        used = std::min(prelude_size - buffer_.size(), in.size());
        buffer_.insert(buffer_.end(), in.begin(), in.begin() + static_cast<std::ptrdiff_t>(used));
        if (buffer_.size() < prelude_size) return decode_step{used, std::nullopt};
        auto step = decode_frame(buffer_);  // the prelude checks
        if (!step) return fail(step.error());
        frame_size_ = read_be32(buffer_.data());
    }
    const std::size_t take = std::min(frame_size_ - buffer_.size(), in.size() - used);
    const auto from = in.begin() + static_cast<std::ptrdiff_t>(used);
    buffer_.insert(buffer_.end(), from, from + static_cast<std::ptrdiff_t>(take));
    used += take;
    if (buffer_.size() < frame_size_) return decode_step{used, std::nullopt};
    auto step = decode_frame(buffer_);
    if (!step) return fail(step.error());
    complete_ = true;
    return decode_step{used, step->frame};
}

codec_result<decode_step> decoder::feed(std::string_view in) { return feed(bytes_of(in)); }

void decoder::reset() noexcept {
    buffer_.clear();
    frame_size_ = 0;
    complete_ = false;
    failed_.reset();
}

codec_result<std::vector<message>> decode_all(std::span<const std::byte> in) {
    std::vector<message> out;
    while (!in.empty()) {
        auto step = decode_frame(in);
        if (!step) return step.error();
        if (!step->frame) return errc::truncated_stream;
        out.push_back(step->frame->to_message());
        in = in.subspan(step->consumed);
    }
    return out;
}

codec_result<std::vector<message>> decode_all(std::string_view in) {
    return decode_all(bytes_of(in));
}

// ---- encoding --------------------------------------------------------------------------------

std::optional<errc> validate(const message& m) {
    for (const auto& h : m.headers) {
        if (h.name.empty()) return errc::header_name_empty;
        if (h.name.size() > max_header_name_size) return errc::header_name_too_long;
        if (variable_value_size(h.value) > max_header_value_size) {
            return errc::header_value_too_long;
        }
    }
    if (m.headers.size() > pairwise_limit) {
        std::vector<std::string_view> names;
        names.reserve(m.headers.size());
        for (const auto& h : m.headers) names.push_back(h.name);
        std::sort(names.begin(), names.end());
        if (std::adjacent_find(names.begin(), names.end()) != names.end()) {
            return errc::duplicate_header;
        }
    } else {
        for (std::size_t i = 0; i < m.headers.size(); ++i) {
            for (std::size_t j = i + 1; j < m.headers.size(); ++j) {
                if (m.headers[i].name == m.headers[j].name) return errc::duplicate_header;
            }
        }
    }
    const std::size_t headers_len = header_block_size(m);
    if (headers_len > max_headers_size) return errc::headers_too_long;
    if (m.payload.size() > max_frame_size - min_frame_size - headers_len) {
        return errc::frame_too_long;
    }
    return std::nullopt;
}

std::string encode(const message& m) {
    BOOST_ASSERT_MSG(!validate(m), "eventstream::encode: message breaks the limits");
    return encode_checked(m);
}

std::string bedrock_event(std::string_view event_type, std::string_view json_payload) {
    return three_string_headers(":event-type", event_type, ":content-type", "application/json",
                                "event", json_payload);
}

std::string bedrock_exception(std::string_view exception_type, std::string_view json_payload) {
    return three_string_headers(":exception-type", exception_type, ":content-type",
                                "application/json", "exception", json_payload);
}

std::string bedrock_error(std::string_view code, std::string_view message) {
    return three_string_headers(":error-code", code, ":error-message", message, "error", {});
}

}  // namespace bgw::aws::eventstream
