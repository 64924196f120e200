#pragma once
/// An in-process fake of the Bedrock runtime API for tests (userver's HttpServerMock shape):
/// a Beast coroutine HTTP/1.1 server on 127.0.0.1:0 with its own io_context and thread.
///
/// It is a strict judge of the gateway: every request must carry a SigV4 signature that verifies
/// against the fake's credentials (recomputed from the headers, wire path, query and body exactly
/// as received), scoped to service `bedrock` and to one of the accepted regions, dated within five
/// minutes. Rejections use Bedrock's wire format (403, `x-amzn-ErrorType`, JSON `{"message"}`).
/// Accepted requests go to a behaviour function; the default one speaks the runtime API
/// (bedrock-facts.md sections 1 and 2) and understands scripted model ids:
/// (A provisioned-model ARN scripts it with its resource id: `arn:...:provisioned-model/<script>`.)
///   `fake-error-<status>-<Code>` answers with that error (status 400..599);
///   `fake-errorbody-<status>-<Code>` answers that status with the error's other AWS JSON shape:
///     no x-amzn-ErrorType, the code only in the body,
///     `{"__type":"com.amazon.bedrock#<Code>","message":...}`;
///   `fake-flaky-<n>-<status>-<Code>[-<tag>]` answers as `fake-error-<status>-<Code>` to the first
///     n (0..1000) accepted requests with exactly this model id, whatever the operation, and
///     normally after that. The count belongs to the fake instance. Code is letters and digits
///     (so it ends at the next '-'); tag is letters, digits, '.' and '_', there only to give a
///     test a fresh count;
///   `fake-delay-<ms>` answers normally after that delay (an asio timer, never a blocking sleep);
///     for the streaming operations, that pause comes before every event instead.
/// A malformed scripted id answers 400 ValidationException. These apply to every model
/// operation (invoke, converse, count-tokens and the two streaming ones).
/// The streaming operations (`invoke-with-response-stream`, `converse-stream`) answer with
/// event-stream frames made by the gateway's codec, and also understand:
///   `fake-stream-exception-<member>` two events, then a modeled exception frame
///     (`throttlingException`, `modelStreamErrorException`, ...);
///   `fake-stream-error` two events, then a `:message-type error` frame;
///   `fake-stream-corrupt` one event, then a frame with a bad message CRC, then a 30 s stall;
///   `fake-stream-cut` two events, then the connection is dropped mid-body;
///   `fake-stream-stall-<ms>` one event, then a silence of that long, then the rest.
///
/// Every request (accepted or rejected) is recorded before its response is written, so once a
/// client holds the response the record is visible through requests().

#include "bgw/aws/sigv4.hpp"

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

namespace boost::asio {
class io_context;
}

namespace bgw::test {

/// One request as the fake received it.
struct recorded_request {
    std::string method;                ///< "POST"
    std::string target;                ///< raw request-target: wire path plus "?query"
    std::string wire_path;             ///< target up to '?', still percent-encoded
    std::string query;                 ///< after '?', without it; empty when absent
    std::vector<aws::header> headers;  ///< in arrival order, names as sent
    std::string body;
    std::string body_sha256;       ///< lowercase hex
    std::string access_key_id;     ///< from the Authorization credential, when parseable
    std::string region;            ///< from the credential scope, when parseable
    bool signature_ok = false;     ///< true only when every check passed
    std::string error_type;        ///< the rejection's x-amzn-ErrorType code; empty if accepted
    unsigned response_status = 0;  ///< what the fake answered (set after the behaviour ran)
    std::string request_id;        ///< the x-amzn-RequestId the fake answered with

    /// First header with this name (case-insensitive); nullopt when absent.
    std::optional<std::string> header(std::string_view name) const;
};

/// One piece of a streamed body (usually one event-stream frame), written as its own HTTP chunk
/// after `pause`.
struct stream_part {
    std::chrono::milliseconds pause{0};
    std::string bytes;
};

/// What the fake answers. `delay` postpones the response on the server's own timer.
struct fake_response {
    unsigned status = 200;
    std::vector<aws::header> headers;  ///< Content-Type, x-amzn-RequestId etc. (added if absent)
    std::string body;
    std::chrono::milliseconds delay{0};
    /// When non-empty, the body is streamed instead of `body`: headers first, then one chunk per
    /// part, as Bedrock's event streams arrive. While pausing, the fake watches its peer, so a
    /// client that goes away is noticed at once (see stream_outcome).
    std::vector<stream_part> stream;
    /// After the last part, hold the connection open this long before finishing (a stalled
    /// upstream).
    std::chrono::milliseconds stall{0};
    /// Finish with the last chunk (true) or drop the connection mid-body (a failed upstream).
    bool stream_complete = true;
};

/// How a streamed response ended, reported once it has.
struct stream_outcome {
    std::string request_id;
    std::size_t parts_total = 0;
    std::size_t parts_sent = 0;
    bool completed = false;    ///< every part and the last chunk were written
    bool peer_closed = false;  ///< the peer closed (or reset) the connection before that
    std::chrono::milliseconds elapsed{0};  ///< from the response header to the end
};

using fake_behaviour = std::function<fake_response(const recorded_request&)>;

struct fake_options {
    aws::credentials credentials{"AKIDFAKEBEDROCK", "fake-bedrock-secret-key", ""};
    std::vector<std::string> regions{"us-east-1"};  ///< accepted credential-scope regions
    std::chrono::seconds max_clock_skew{300};       ///< AWS allows 5 minutes either way
    std::size_t max_body_bytes = 64 * 1024 * 1024;  ///< above Bedrock's 25 MB blob limit
};

/// A Bedrock-shaped error: JSON `{"message"}` plus `x-amzn-ErrorType: <code>:http://...`.
fake_response make_error(unsigned status, std::string_view code, std::string_view message);

/// The default behaviour: the runtime routes of bedrock-facts.md section 1 and the scripted
/// model ids above; anything else is 404 UnknownOperationException. `fake-flaky-*` counts against
/// the fake whose thread runs it (so a custom behaviour may delegate here); called outside a
/// fake, every request counts as the first.
fake_response default_behaviour(const recorded_request& req);

/// Checks the request's SigV4 signature as AWS would. Sets `req.signature_ok`, `access_key_id`
/// and `region`; on failure returns the 403 that Bedrock would send and sets `req.error_type`.
std::optional<fake_response> verify_signature(recorded_request& req,
                                              const fake_options& opts,
                                              std::chrono::sys_seconds now);

/// Test helper: signs `req` in place for `region`/`service` at `time` with `creds` (adds Host if
/// missing, Content-Length, X-Amz-Date, X-Amz-Security-Token when set, Authorization), as botocore
/// does.
void sign_request(boost::beast::http::request<boost::beast::http::string_body>& req,
                  const aws::credentials& creds,
                  std::string_view region,
                  std::chrono::sys_seconds time,
                  std::string_view service = "bedrock");

/// Percent-decodes `%XX` (a malformed escape is kept as it is).
std::string percent_decode(std::string_view s);

class fake_bedrock {
public:
    explicit fake_bedrock(fake_options opts = {});
    ~fake_bedrock();
    fake_bedrock(const fake_bedrock&) = delete;
    fake_bedrock& operator=(const fake_bedrock&) = delete;

    /// Binds 127.0.0.1:0 and starts serving on a new thread. Throws on bind failure (test setup).
    void start();
    /// Closes everything and joins the thread. Idempotent; called by the destructor.
    void stop();
    unsigned short port() const { return port_; }
    /// "http://127.0.0.1:PORT", for a gateway region endpoint.
    std::string endpoint() const;

    /// Replaces the behaviour for accepted requests (thread-safe; default_behaviour initially).
    void set_behaviour(fake_behaviour behaviour);
    /// Called on the server thread for every recorded request, before the response is written.
    /// Set it before start().
    void set_observer(std::function<void(const recorded_request&)> observer);

    /// Called on the server thread when a streamed response ends. Set it before start().
    void set_stream_observer(std::function<void(const stream_outcome&)> observer);
    /// Every stream outcome so far (thread-safe).
    std::vector<stream_outcome> stream_outcomes() const;
    /// Waits until at least `n` streams have ended; false on timeout.
    bool wait_for_stream_outcomes(std::size_t n, std::chrono::milliseconds timeout) const;

    /// A snapshot of everything recorded so far (thread-safe).
    std::vector<recorded_request> requests() const;
    std::size_t request_count() const;
    void clear_requests();
    /// Waits until at least `n` requests are recorded; false on timeout.
    bool wait_for_requests(std::size_t n, std::chrono::milliseconds timeout) const;

    struct state;  ///< shared with the server coroutines; defined in the .cpp

private:
    std::shared_ptr<state> state_;
    std::unique_ptr<boost::asio::io_context> ioc_;
    std::thread thread_;
    unsigned short port_ = 0;
};

}  // namespace bgw::test
