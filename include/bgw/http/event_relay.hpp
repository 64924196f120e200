#pragma once
/// The pure core of relaying a Bedrock event stream (`application/vnd.amazon.eventstream`):
/// bytes from upstream go in, whole validated frames come out unchanged, and on the side the
/// relay learns what the stream said (token usage, mid-stream exceptions) without altering a
/// byte. The I/O shell (src/net/relay.cpp) writes what comes out as soon as it comes out.
///
/// Forwarding whole frames, not raw pieces, is what lets a corrupt upstream frame end the
/// client's stream cleanly: the client never receives the corrupt bytes, and gets instead one
/// `:message-type error` frame saying what happened, which SDKs raise as their normal
/// event-stream error.

#include "bgw/aws/eventstream.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bgw::http {

/// What a stream said, for the request's log line and metrics.
struct stream_summary {
    std::uint64_t frames = 0;  ///< every frame forwarded (events, exceptions, errors)
    std::uint64_t events = 0;  ///< `:message-type event` frames
    /// ConverseStream `metadata.usage`, or the InvokeModel stream's last chunk's
    /// `amazon-bedrock-invocationMetrics`.
    std::optional<std::uint64_t> input_tokens;
    std::optional<std::uint64_t> output_tokens;
    /// `:exception-type` of a modeled exception frame (`throttlingException`, ...) or
    /// `:error-code` of an error frame; empty when the stream had none.
    std::string exception;
    std::string exception_message;
    /// Why the stream lost its framing (codec error text); empty while it is sound.
    std::string corrupt;
};

class event_relay {
public:
    /// Takes the next bytes from upstream (any split) and appends to `out` every frame they
    /// complete, byte for byte, observing each on the way. Returns false once the stream is
    /// corrupt: `out` then holds the sound frames that came before, and nothing more is
    /// accepted (summary().corrupt says why).
    bool feed(std::string_view in, std::string& out);

    /// Bytes of an incomplete frame held back; nonzero at the end of the body means the
    /// upstream cut a frame short.
    std::size_t pending() const noexcept { return decoder_.buffered(); }
    const stream_summary& summary() const noexcept { return summary_; }

private:
    void observe(const aws::eventstream::frame_view& frame);

    aws::eventstream::decoder decoder_;
    stream_summary summary_;
};

/// The frame that ends a client's stream when the upstream's went bad: `:message-type error`,
/// `:error-code` `InternalServerException`, and `why` as `:error-message`.
std::string stream_failure_frame(std::string_view why);

/// Base64 (RFC 4648, padded) decoding; nullopt for anything malformed.
std::optional<std::string> base64_decode(std::string_view in);

}  // namespace bgw::http
