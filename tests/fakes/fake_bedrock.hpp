#pragma once
/// An in-process fake of AWS Bedrock for tests (userver's HttpServerMock shape): a Beast coroutine
/// HTTP/1.1 server on 127.0.0.1:0 with its own io_context and thread. One listener serves three
/// APIs, so a test can point the runtime, control-plane and S3 endpoints of a client at one fake:
/// the Bedrock runtime, the batch-inference part of the Bedrock control plane, and a path-style S3
/// object store (in memory, per fake instance).
///
/// It is a strict judge of the gateway: every request must carry a SigV4 signature that verifies
/// against the fake's credentials (recomputed from the headers, wire path, query and body exactly
/// as received), scoped to one of the accepted regions, dated within five minutes, and scoped to
/// the service the request is for:
///   - `bedrock` for the runtime and control-plane routes below. The canonical URI is normalised
///     and percent-encoded again, as botocore does. Rejections use Bedrock's wire format (403,
///     `x-amzn-ErrorType`, JSON `{"message"}`).
///   - `s3` for the S3 routes. The canonical URI is the wire path as it is (neither normalised nor
///     double-encoded), and `x-amz-content-sha256` must be sent, signed, and equal to the SHA-256
///     hex of the body received (`UNSIGNED-PAYLOAD` and aws-chunked uploads are refused).
///     Rejections use S3's XML shape, all with status 403:
///     `<?xml ...?><Error><Code>SignatureDoesNotMatch</Code><Message>...</Message>...</Error>`
///     (codes: SignatureDoesNotMatch, InvalidAccessKeyId, InvalidToken, AccessDenied,
///     RequestTimeTooSkewed, AuthorizationHeaderMalformed).
/// With fake_options::bearer_token set, a Bedrock (not S3) request may instead carry a Bedrock API
/// key, `Authorization: Bearer <key>`, as the SDKs send AWS_BEARER_TOKEN_BEDROCK: it is accepted
/// when the header is exactly `Bearer <bearer_token>` and the request carries no
/// X-Amz-Security-Token (that would be a client's credentials leaking through). Any other key is a
/// 403 in Bedrock's shape (`AccessDeniedException`), and so is a token alongside the right one
/// (`UnrecognizedClientException`).
/// SigV4 requests are still judged as above. Without bearer_token every Bearer request is refused
/// as an incomplete signature, as before.
/// Which API a request is for follows from its path and scope: a path whose first segment is a
/// Bedrock resource (`model`, `guardrail`, `async-invoke`, `model-invocation-job`, any other
/// root of the bedrock/bedrock-runtime service models) is Bedrock's; any other path is S3's when
/// the request is scoped to `s3`, or when its method is GET, PUT, HEAD or DELETE and its first
/// segment is not empty (so an S3 object request signed as `bedrock` is a 403 in S3's shape, and a
/// runtime request signed as `s3` a 403 in Bedrock's). Everything else is Bedrock's.
///
/// Accepted requests go to a behaviour function. The default one serves:
///
/// S3 (path style; the bucket is the first path segment, the key the rest of the path,
/// percent-decoded once; the query, such as `x-id=PutObject`, is ignored):
///   PUT /{bucket}/{key...}  stores the body (and Content-Type), 200 with `ETag: "<md5 hex>"`;
///   GET /{bucket}/{key...}  200 with the bytes, Content-Type, ETag and Last-Modified, or 404
///                           `<Error><Code>NoSuchKey</Code>...`;
///   any other method on a key 405 MethodNotAllowed; a bucket without a key, or a multipart /
///   tagging / acl query, 501 NotImplemented. Buckets need no creating.
///
/// The control plane's batch inference (bedrock-facts.md section 6):
///   POST /model-invocation-job  CreateModelInvocationJob. Requires jobName (1-63 chars, the
///     model's pattern), roleArn (`arn:...:iam::...:role/...`), modelId,
///     inputDataConfig.s3InputDataConfig.s3Uri (`s3://bucket/key`, which must exist in this
///     fake's S3 store) and outputDataConfig.s3OutputDataConfig.s3Uri (`s3://bucket[/prefix]`);
///     checks modelInvocationType (InvokeModel|Converse), timeoutDurationInHours (24..168) and
///     s3InputFormat (JSONL) when given. Any of that wrong: 400 ValidationException. Answers 200
///     `{"jobArn":"arn:aws:bedrock:<scope region>:123456789012:model-invocation-job/<jobId>"}`,
///     jobId 12 random lowercase letters and digits. A clientRequestToken seen before answers the
///     first job's ARN and creates nothing (recorded_request::created_job tells them apart).
///   GET /model-invocation-job/{jobIdentifier}  GetModelInvocationJob; the identifier is the
///     percent-encoded job ARN or the bare job id; unknown: 404 ResourceNotFoundException.
///     Each GET moves the job one step: the first answers `Submitted`, the next
///     fake_options::batch_in_progress_polls (default 1) answer `InProgress`, and the one after
///     finishes the job, which stays finished: `Completed`, or `PartiallyCompleted` when a record
///     failed, or `Failed` with a `message` when the modelId is `fake-batch-fail` (or the input
///     object is gone, has no records, or has a line that is not `{"recordId"?, "modelInput":{}}`).
///     Finished jobs carry endTime and total/processed/success/errorRecordCount.
///   On finishing (not Failed) the fake reads the input object and writes, into its S3 store,
///     `<output s3Uri, with a trailing '/'><jobId>/<basename of the input key>.out`: one line per
///     input record, `{"recordId":...,"modelInput":...,"modelOutput":...}` (a missing recordId is
///     made up), where a record whose modelInput JSON contains `fake-record-error` has
///     `"error":{"errorCode":400,"errorMessage":"fake-bedrock scripted record error"}` instead of
///     modelOutput. modelOutput is, for modelInvocationType `Converse`,
///     `{"output":{"message":{"role":"assistant","content":[{"text":"batch answer"}]}},
///       "stopReason":"end_turn","usage":{"inputTokens":N,"outputTokens":3,"totalTokens":N+3}}`
///     (N estimated from the modelInput's size), otherwise (InvokeModel)
///     `{"fakeBatch":true,"recordId":"<recordId>","modelId":"<the job's modelId>"}`. Next to it,
///     `<jobId>/manifest.json.out` holds `{"totalRecordCount","processedRecordCount",
///     "successRecordCount","errorRecordCount","inputTokenCount","outputTokenCount"}`.
///
/// The runtime API (bedrock-facts.md sections 1 and 2), which understands scripted model ids:
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
#include <cstdint>
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
    std::string body_sha256;    ///< lowercase hex
    std::string access_key_id;  ///< from the Authorization credential, when parseable
    /// The Authorization scheme: "sigv4" (a parseable AWS4-HMAC-SHA256 header), "bearer" (a
    /// `Bearer` key; access_key_id stays empty) or empty (no header, or neither).
    std::string auth;
    std::string region;            ///< from the credential scope, when parseable
    std::string service;           ///< from the credential scope ("bedrock", "s3"), when parseable
    std::string s3_bucket;         ///< a request for S3: the bucket (first path segment), decoded
    std::string s3_key;            ///< a request for S3: the object key (rest of path), decoded
    bool signature_ok = false;     ///< true only when every check passed (SigV4 or bearer key)
    std::string error_type;        ///< the rejection's x-amzn-ErrorType code; empty if accepted
    unsigned response_status = 0;  ///< what the fake answered (set after the behaviour ran)
    std::string request_id;        ///< the x-amzn-RequestId the fake answered with
    /// A CreateModelInvocationJob that really created a job (false for an idempotent replay with
    /// a clientRequestToken seen before, and for every other request).
    bool created_job = false;

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
    /// GetModelInvocationJob answers `InProgress` this many times (after one `Submitted`) before
    /// the job finishes.
    unsigned batch_in_progress_polls = 1;
    /// A Bedrock API key accepted as `Authorization: Bearer <key>` (see above); empty: none is.
    std::string bearer_token;
    /// Serve HTTPS with this certificate chain and key (PEM), as Bedrock does; empty: plain HTTP.
    std::string tls_cert_pem;
    std::string tls_key_pem;
    /// SO_RCVBUF for accepted connections (0: the system's): a small window, a slow reader.
    std::size_t receive_buffer_bytes = 0;
};

/// One object in the fake's S3 store.
struct stored_s3_object {
    std::string bucket;
    std::string key;
    std::string body;
    std::string etag;          ///< `"<md5 hex>"`, quotes included, as S3 sends it
    std::string content_type;  ///< as PUT sent it (`binary/octet-stream` when it sent none)
    std::chrono::sys_seconds last_modified{};
};

/// A snapshot of one batch inference job.
struct fake_batch_job {
    std::string job_id;  ///< 12 lowercase letters and digits
    std::string job_arn;
    std::string job_name;
    std::string model_id;
    std::string role_arn;
    std::string client_request_token;   ///< empty when the create had none
    std::string model_invocation_type;  ///< empty when the create had none
    std::string input_s3_uri;
    std::string output_s3_uri;
    std::string status;      ///< Submitted, InProgress, Completed, PartiallyCompleted or Failed
    std::string message;     ///< why it failed
    unsigned get_count = 0;  ///< GetModelInvocationJob requests answered for it
    std::string output_object_uri;  ///< `s3://.../<jobId>/<input basename>.out` once written
    std::uint64_t total_records = 0;
    std::uint64_t success_records = 0;
    std::uint64_t error_records = 0;
};

/// A Bedrock-shaped error: JSON `{"message"}` plus `x-amzn-ErrorType: <code>:http://...`.
fake_response make_error(unsigned status, std::string_view code, std::string_view message);

/// An S3-shaped error: 403 etc. with `application/xml` `<Error><Code>..</Code><Message>..`
/// `</Message><RequestId>..</RequestId></Error>` and `x-amz-request-id`.
fake_response make_s3_error(unsigned status, std::string_view code, std::string_view message);

/// The default behaviour: the S3, control-plane and runtime routes above (by the request's
/// credential-scope service: `s3` goes to S3, anything else to Bedrock); anything else is 404
/// UnknownOperationException. `fake-flaky-*`, the S3 store and the batch jobs belong to the fake
/// whose thread runs it (so a custom behaviour may delegate here); called outside a fake, every
/// request counts as the first and the S3 and batch routes answer 500.
fake_response default_behaviour(const recorded_request& req);

/// Checks the request's SigV4 signature as AWS would, the Bedrock way or the S3 way (see above),
/// or its bearer key when `opts.bearer_token` is set.
/// Sets `req.signature_ok`, `auth`, `access_key_id`, `region`, `service` and, for S3, `s3_bucket`
/// and `s3_key`; on failure returns the 403 that Bedrock (or S3) would send and sets
/// `req.error_type` (the x-amzn-ErrorType code, or S3's `<Code>`).
std::optional<fake_response> verify_signature(recorded_request& req,
                                              const fake_options& opts,
                                              std::chrono::sys_seconds now);

/// Test helper: signs `req` in place for `region`/`service` at `time` with `creds` (adds Host if
/// missing, Content-Length, X-Amz-Date, X-Amz-Security-Token when set, Authorization), as botocore
/// does. For service `s3` it signs the S3 way (canonical URI as on the wire) and adds
/// `X-Amz-Content-SHA256` (the body's hash) unless the request already has one.
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

    /// Binds 127.0.0.1:0 and starts serving on a new thread. Throws on bind failure or a bad TLS
    /// certificate or key (test setup).
    void start();
    /// Closes everything and joins the thread. Idempotent; called by the destructor.
    void stop();
    unsigned short port() const { return port_; }
    /// "http://127.0.0.1:PORT" (or "https://localhost:PORT" with TLS), for a region endpoint.
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

    /// The S3 store (thread-safe). Puts an object as a signed PUT would (to seed a job's input).
    void put_s3_object(std::string_view bucket,
                       std::string_view key,
                       std::string body,
                       std::string content_type = "binary/octet-stream");
    /// One object; nullopt when absent.
    std::optional<stored_s3_object> s3_object(std::string_view bucket, std::string_view key) const;
    /// The objects in `bucket` (every bucket when empty) whose key starts with `prefix`, sorted by
    /// bucket, then key.
    std::vector<stored_s3_object> s3_objects(std::string_view bucket = {},
                                             std::string_view prefix = {}) const;

    /// Batch jobs (thread-safe): how many CreateModelInvocationJob requests really created one
    /// (idempotent replays excluded), and a snapshot of each, in creation order.
    std::size_t batch_jobs_created() const;
    std::vector<fake_batch_job> batch_jobs() const;

    struct state;  ///< shared with the server coroutines; defined in the .cpp

private:
    std::shared_ptr<state> state_;
    std::unique_ptr<boost::asio::io_context> ioc_;
    std::thread thread_;
    unsigned short port_ = 0;
};

}  // namespace bgw::test
