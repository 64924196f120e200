#pragma once
/// The bench upstream's answers, built once as complete HTTP/1.1 response bytes (status line,
/// headers, body) so that serving one is a single write with nothing computed per request.
///
/// Pure: no I/O, no clock. The shapes follow Bedrock's wire format as tests/fakes/fake_bedrock
/// speaks it (InvokeModel JSON with the token-count headers, Converse JSON with `usage`, event
/// streams as chunked `application/vnd.amazon.eventstream` frames, one frame per chunk), but the
/// content is canned: it does not depend on the request.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace bgw::bench {

/// A JSON document of exactly `bytes` bytes (or the smallest the shape allows, when `bytes` is
/// smaller), shaped like an Anthropic Messages answer from InvokeModel.
std::string invoke_body(std::size_t bytes);

/// A Converse answer (`output.message`, `stopReason`, `usage`, `metrics`) of exactly `bytes`
/// bytes (or the smallest the shape allows).
std::string converse_body(std::size_t bytes);

/// `200 OK`, `Content-Type: application/json`, `Content-Length`, a request id and the
/// `X-Amzn-Bedrock-Input-Token-Count` / `-Output-Token-Count` / `-Invocation-Latency` headers,
/// then `body`.
std::string json_response(std::string_view body);

/// `404` with `x-amzn-ErrorType: UnknownOperationException`, for anything but the four
/// operations served. The connection stays usable.
std::string not_found_response();

/// `400` for a request the bench upstream cannot read (chunked request body, malformed head);
/// `Connection: close`, as the connection cannot be resynchronised.
std::string bad_request_response();

/// One streamed answer: the head (chunked) and one HTTP chunk per event-stream frame. The last
/// chunk already carries the terminating `0\r\n\r\n`, so the client sees the end of the body
/// with the last event.
struct stream_response {
    std::string head;
    std::vector<std::string> chunks;
    /// head and every chunk concatenated: the whole answer in one write when there is no gap.
    std::string whole;
};

/// ConverseStream with `events` frames in all: `messageStart`, `contentBlockDelta` x
/// (events - 4), `contentBlockStop`, `messageStop`, `metadata` (with `usage`). Fewer than 5
/// events keep `messageStart` and end with `metadata`.
stream_response converse_stream(unsigned events);

/// InvokeModelWithResponseStream with `events` `chunk` frames ({"bytes": base64(...)}), the
/// last carrying `amazon-bedrock-invocationMetrics`.
stream_response invoke_stream(unsigned events);

}  // namespace bgw::bench
