#pragma once
/// AWS event-stream framing (`application/vnd.amazon.eventstream`), the body format of
/// InvokeModelWithResponseStream and ConverseStream: header/message types, an incremental
/// decoder that checks both CRCs and the size limits, and a byte-exact encoder.
///
/// Pure: no I/O, no clock, nothing thrown on the data path (errors are `errc` values).
/// Wire format: https://docs.aws.amazon.com/transcribe/latest/dg/event-stream.html
/// and https://docs.aws.amazon.com/lexv2/latest/dg/event-stream-encoding.html ("any given header
/// can appear only once"); limits from aws-c-event-stream `include/aws/event-stream/
/// event_stream.h` and botocore `botocore/eventstream.py` (see tests/reference/eventstream/
/// NOTES.md).

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <boost/assert/source_location.hpp>
#include <boost/system/result.hpp>

namespace bgw::aws::eventstream {

// ---- limits ----------------------------------------------------------------------------------

/// `[total_length u32][headers_length u32][prelude_crc u32]`.
inline constexpr std::size_t prelude_size = 12;
/// Prelude plus the trailing message CRC: a frame with no headers and no payload.
inline constexpr std::size_t min_frame_size = 16;
/// aws-c-event-stream `AWS_EVENT_STREAM_MAX_MESSAGE_SIZE`: a declared length above this is
/// refused right after the prelude, so a hostile or corrupt peer cannot make us buffer more.
inline constexpr std::size_t max_frame_size = 24 * 1024 * 1024;
/// botocore `_MAX_HEADERS_LENGTH` (aws-c-event-stream `AWS_EVENT_STREAM_MAX_HEADERS_SIZE`).
inline constexpr std::size_t max_headers_size = 128 * 1024;
/// The name length is one byte on the wire; an empty name is refused (it names nothing).
inline constexpr std::size_t max_header_name_size = 255;
/// aws-c-event-stream `AWS_EVENT_STREAM_HEADER_VALUE_MAX_SIZE` (INT16_MAX) for string/bytes.
inline constexpr std::size_t max_header_value_size = 32767;

// ---- errors ----------------------------------------------------------------------------------

/// Why a frame (or a message given to the encoder) was refused. A decoder that reports one of
/// these stays failed: the stream has lost its framing and cannot resynchronise.
enum class errc : std::uint8_t {
    prelude_checksum_mismatch = 1,  ///< CRC of the first 8 bytes differs from bytes 8..11
    message_checksum_mismatch,      ///< CRC of the frame differs from its last 4 bytes
    frame_too_short,                ///< total_length < 16
    frame_too_long,                 ///< total_length > max_frame_size
    headers_too_long,               ///< headers_length > max_headers_size
    headers_exceed_frame,           ///< headers_length > total_length - 16
    header_truncated,               ///< a header runs past the end of the header block
    header_name_empty,              ///< name length byte is 0
    header_name_too_long,           ///< encoder only: name longer than 255 bytes
    header_value_too_long,          ///< string/bytes value longer than 32767 bytes
    unknown_header_type,            ///< value type byte above 9
    duplicate_header,               ///< the same name twice in one frame
    truncated_stream,               ///< `decode_all` only: input ends inside a frame
};

/// Human text for logs and tests, e.g. "Prelude checksum mismatch" / "Message checksum
/// mismatch" (the texts of the aws-sdk-go negative vectors). Never empty.
std::string_view to_string(errc e) noexcept;

/// Value or `errc`. Test with `if (!r)` and read `r.error()`.
template <class T>
using codec_result = boost::system::result<T, errc>;

/// Needed by `codec_result<T>::value()` on an error, which is a caller bug (check first);
/// throws std::logic_error carrying `to_string(e)`.
[[noreturn]] void throw_exception_from_error(const errc& e, const boost::source_location& loc);

// ---- header values ---------------------------------------------------------------------------

/// The wire value-type byte of a header.
enum class header_type : std::uint8_t {
    bool_true = 0,
    bool_false = 1,
    byte = 2,  ///< int8
    int16 = 3,
    int32 = 4,
    int64 = 5,
    byte_array = 6,  ///< u16 length + bytes
    string = 7,      ///< u16 length + UTF-8 (not checked: relayed, never interpreted as text)
    timestamp = 8,   ///< int64 milliseconds since the Unix epoch
    uuid = 9,        ///< 16 raw bytes
};

/// Type 8: milliseconds since the epoch, kept as a time point so it cannot be confused with
/// an int64 header.
using timestamp = std::chrono::sys_time<std::chrono::milliseconds>;
/// Type 9: the 16 bytes as they appear on the wire.
using uuid = std::array<std::byte, 16>;
/// Type 6.
using byte_array = std::vector<std::byte>;

/// One header value. `bool` covers wire types 0 and 1 (the type byte carries the value).
using header_value = std::variant<bool,
                                  std::int8_t,
                                  std::int16_t,
                                  std::int32_t,
                                  std::int64_t,
                                  byte_array,
                                  std::string,
                                  timestamp,
                                  uuid>;

/// The wire type byte `encode` writes for `v`.
header_type type_of(const header_value& v) noexcept;

/// A header: name (1..255 bytes, unique within a message) and typed value.
struct header {
    std::string name;
    header_value value;
    friend bool operator==(const header&, const header&) = default;
};

/// A decoded or to-be-encoded frame, headers in wire order.
struct message {
    std::vector<header> headers;
    std::string payload;  ///< raw bytes; Bedrock sends JSON

    /// The header called `name` (exact, case-sensitive, as botocore compares), or nullptr.
    const header* find(std::string_view name) const noexcept;
    /// The value of string header `name`; nullopt if absent or not a string (type 7).
    std::optional<std::string_view> string_header(std::string_view name) const noexcept;

    friend bool operator==(const message&, const message&) = default;
};

// ---- decoding --------------------------------------------------------------------------------

/// A validated frame, viewed in place (no copy). Both CRCs, the limits and the header block
/// were checked before one is handed out, so its accessors cannot fail. It borrows the bytes:
/// valid while they are (see `decoder::feed` for how long that is).
class frame_view {
public:
    /// Precondition: `wire` is exactly one frame that `decode_frame` accepted.
    explicit frame_view(std::span<const std::byte> wire) noexcept : wire_(wire) {}

    /// The whole frame, byte for byte as received (prelude to message CRC).
    std::span<const std::byte> wire() const noexcept { return wire_; }
    std::uint32_t total_length() const noexcept;
    std::uint32_t headers_length() const noexcept;
    std::uint32_t prelude_crc() const noexcept;
    std::uint32_t message_crc() const noexcept;
    /// The raw header block (headers_length bytes after the prelude).
    std::span<const std::byte> header_block() const noexcept;
    /// The payload, in place.
    std::string_view payload() const noexcept;
    /// Scans the header block for string header `name` without allocating; nullopt if absent
    /// or not a string. This is what the relay uses to read `:message-type` and friends.
    std::optional<std::string_view> string_header(std::string_view name) const noexcept;
    /// An owning copy (allocates).
    message to_message() const;

private:
    std::span<const std::byte> wire_;
};

/// What one decoding step produced: how many input bytes it used and, when those bytes
/// completed a frame, the frame.
struct decode_step {
    std::size_t consumed = 0;
    std::optional<frame_view> frame;
};

/// Stateless: decodes the frame at the start of `in` (Envoy's `{message?, bytes_consumed}`).
/// - fewer than 12 bytes, or fewer than the declared total_length: `{0, nullopt}`, need more;
/// - otherwise `{total_length, frame}` viewing into `in`.
/// The prelude is checked as soon as 12 bytes are present, so a corrupt or oversized length is
/// reported at once rather than waited for. Errors, in check order: prelude_checksum_mismatch,
/// frame_too_short, frame_too_long, headers_too_long, headers_exceed_frame, then (with the whole
/// frame) message_checksum_mismatch, then header_truncated, header_name_empty,
/// unknown_header_type, header_value_too_long, duplicate_header. The header block is read in
/// wire order and the first malformed header decides which of the first four is reported (as it
/// is met: name length, name, type, value length, value); duplicates are looked for only once
/// every header parsed.
codec_result<decode_step> decode_frame(std::span<const std::byte> in) noexcept;

/// Incremental decoder for one response body: accepts bytes in any split (one at a time works)
/// and hands out each frame as soon as its last byte arrives. It holds at most the one frame
/// in progress, copying only frames that arrive split across calls; a frame that arrives whole
/// in one call is viewed in the caller's buffer. Once it reports an error it stays failed.
///
/// Typical relay loop (bytes are forwarded unchanged elsewhere; this only observes):
/// ```
/// for (auto in = piece; !in.empty();) {
///     auto step = dec.feed(in);
///     if (!step) { /* log to_string(step.error()); end the client's stream */ }
///     in = in.subspan(step->consumed);
///     if (step->frame) observe(*step->frame);
/// }
/// ```
class decoder {
public:
    /// Consumes bytes from `in` up to the end of the current frame (never past it), so
    /// `consumed < in.size()` means a frame completed and the rest belongs to the next one.
    /// Consumes at least one byte of non-empty input unless it fails. The returned frame
    /// views either `in` or the decoder's buffer: valid until the next `feed`/`reset` and,
    /// when it views `in`, while `in` lives. Errors: those of `decode_frame`; after the first
    /// error every call returns that error again and consumes nothing.
    codec_result<decode_step> feed(std::span<const std::byte> in);
    /// Same, for text buffers (Beast hands out `char`).
    codec_result<decode_step> feed(std::string_view in);

    /// The first error seen, if any.
    std::optional<errc> error() const noexcept { return failed_; }
    /// Bytes of an incomplete frame held (0 between frames). Nonzero at end of stream means
    /// the upstream cut a frame short.
    std::size_t buffered() const noexcept { return complete_ ? 0 : buffer_.size(); }
    /// Forgets everything, including a failure (for a new stream).
    void reset() noexcept;

private:
    std::vector<std::byte> buffer_;  ///< the frame in progress (or just completed)
    std::size_t frame_size_ = 0;     ///< total_length once the prelude is checked, else 0
    bool complete_ = false;          ///< buffer_ holds a frame already handed out
    std::optional<errc> failed_;
};

/// Convenience for tests, tools and the fake upstream: every frame of a complete body, owned.
/// Errors: as `decode_frame`, or truncated_stream if `in` ends inside a frame.
codec_result<std::vector<message>> decode_all(std::span<const std::byte> in);
codec_result<std::vector<message>> decode_all(std::string_view in);

// ---- encoding --------------------------------------------------------------------------------

/// Checks what `encode` needs: names 1..255 bytes and unique, string/bytes values <= 32767
/// bytes, header block <= max_headers_size, frame <= max_frame_size. nullopt when encodable;
/// otherwise header_name_empty, header_name_too_long, header_value_too_long (the first
/// offending header, in order), else duplicate_header, else headers_too_long, else
/// frame_too_long.
std::optional<errc> validate(const message& m);

/// The frame for `m`, byte-exact (headers in the given order; CRC-32/IEEE, big-endian).
/// Precondition: `validate(m)` is nullopt; otherwise returns an empty string (never a frame a
/// peer would mis-parse) and asserts in debug builds. Messages are always built by the gateway
/// or tests, never from untrusted input, so a violation is a programming error.
std::string encode(const message& m);

/// A Bedrock stream event as the service frames it: string headers in wire order
/// `:event-type`=`event_type`, `:content-type`=`application/json`, `:message-type`=`event`
/// (the order of the real capture, awsdocs/aws-doc-sdk-examples#5541), payload as given.
/// Empty string if a field breaks the limits (see `encode`).
std::string bedrock_event(std::string_view event_type, std::string_view json_payload);

/// A modeled mid-stream exception: `:exception-type`=`exception_type` (the lowerCamel member
/// name botocore looks up, e.g. `throttlingException`), `:content-type`=`application/json`,
/// `:message-type`=`exception`; payload `{"message":...}` as given. Empty string on limits.
std::string bedrock_exception(std::string_view exception_type, std::string_view json_payload);

/// An unmodeled error frame: `:error-code`, `:error-message`, `:message-type`=`error`, empty
/// payload (botocore `EventStreamMessage.to_response_dict`). Empty string on limits.
std::string bedrock_error(std::string_view code, std::string_view message);

}  // namespace bgw::aws::eventstream
