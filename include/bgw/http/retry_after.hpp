#pragma once
/// How long to wait before asking again, in the three forms clients read: the uniform 429's
/// and every answer that should not be retried at once. The wait itself is the policy's.

#include <chrono>
#include <cstdint>
#include <string>

namespace bgw::http {

/// One wait, in the two units the headers carry.
struct retry_after_value {
    std::uint64_t seconds;       ///< `Retry-After`: whole seconds, at least 1, rounded up
    std::uint64_t milliseconds;  ///< `x-amz-retry-after`: at least 1
};
retry_after_value retry_after(std::chrono::milliseconds wait);

/// Sets the three forms of one wait on a response (`Fields` has `set(name, value)`), in the
/// order SDKs should meet them: `x-amz-retry-after` (ms; the AWS SDK for JavaScript v3 reads
/// whichever of it and `Retry-After` comes first, so the precise one goes first),
/// `retry-after-ms` (ms; the Anthropic and OpenAI SDKs), `Retry-After` (whole seconds, rounded
/// up, at least 1; RFC 9110 section 10.2.3).
template <class Fields>
void set_retry_after(Fields& fields, std::chrono::milliseconds wait) {
    const auto v = retry_after(wait);
    fields.set("x-amz-retry-after", std::to_string(v.milliseconds));
    fields.set("retry-after-ms", std::to_string(v.milliseconds));
    fields.set("Retry-After", std::to_string(v.seconds));
}

}  // namespace bgw::http
