#pragma once
/// A minimal HTTP/1.1 request-head reader for the bench upstream: the request line and the
/// three headers that decide framing (Content-Length, Transfer-Encoding, Connection).
///
/// Not Beast's parser, on purpose: the bench upstream must never be the bottleneck of a
/// measurement, and its clients (wrk, nginx, the gateway, bench/run) all send
/// Content-Length-framed requests, so a scan for the end of the head and three header names is
/// all it needs. Anything it does not understand is refused (`ok == false`), never guessed.

#include <cstddef>
#include <string_view>

namespace bgw::bench {

/// What the upstream serves, from the last path segment of `/model/{modelId}/{operation}`.
enum class operation { invoke, converse, converse_stream, invoke_stream, unknown };

struct request_head {
    bool ok = false;          ///< false: malformed, or a framing the upstream refuses
    std::string_view method;  ///< "POST"
    std::string_view target;  ///< origin-form target as sent
    std::size_t content_length = 0;
    bool keep_alive = true;  ///< HTTP/1.1 without `Connection: close`
};

/// Where the head ends: the offset just past the blank line, or 0 if `in` does not hold a whole
/// head yet.
std::size_t head_end(std::string_view in);

/// Parses a whole head (`in` up to `head_end`). Refuses chunked request bodies and
/// non-numeric or duplicate Content-Length values.
request_head parse_head(std::string_view head);

/// The operation and `{modelId}` (raw, as sent) of a `/model/{modelId}/{operation}` target.
struct model_call {
    operation op = operation::unknown;
    std::string_view model_id;
};
model_call parse_model_call(std::string_view target);

}  // namespace bgw::bench
