#pragma once
/// Recognises the Bedrock runtime API in an incoming request target and produces the canonical
/// wire path the gateway sends upstream. Paths and methods come from the bedrock-runtime service
/// model (botocore `bedrock-runtime/2023-09-30/service-2.json`).

#include "bgw/error.hpp"

#include <string>
#include <string_view>

#include <boost/beast/http/verb.hpp>

namespace bgw::routing {

enum class operation {
    invoke_model,
    invoke_model_with_response_stream,
    converse,
    converse_stream,
    count_tokens,
    apply_guardrail,
    invoke_guardrail_checks,
    start_async_invoke,
    list_async_invokes,
    get_async_invoke,
};

/// The service model's operation name ("InvokeModel", ...), for logs and metrics.
std::string_view operation_name(operation op);

/// True for the operations answered with `application/vnd.amazon.eventstream`.
bool is_streaming(operation op);

/// A recognised runtime request.
struct runtime_request {
    operation op;
    std::string model_id;   ///< decoded `{modelId}` (empty when the operation has none)
    std::string wire_path;  ///< the path to send upstream: every label re-encoded canonically
    std::string query;      ///< raw query (without '?'), only for operations that take one; never
                            ///< with the SigV4 query-signing parameters (see strip_sigv4_query)
    /// The decoded first segment of `/{region}/model/...`, unchecked (the router checks it);
    /// empty when the path has no prefix.
    std::string region_prefix;
    /// The decoded `X-Amz-Credential` of a query-signed request (dropped from `query`), empty
    /// when none: its scope's region is the same weak intent as an Authorization header's.
    /// Defaulted, so brace-initialised requests (tests, the pipeline) need not name it.
    std::string query_credential = {};
};

/// Longest model id / label the gateway accepts (the service model allows 2048 for modelId).
inline constexpr std::size_t max_label_bytes = 2048;

/// Percent-encodes `s` keeping only unreserved characters (A-Za-z0-9-._~), as botocore encodes
/// a URI label.
std::string encode_label(std::string_view s);

/// The wire path of a model operation for another model id (a route target's): `op` must be
/// one of the `/model/{modelId}/...` operations.
std::string model_wire_path(operation op, std::string_view model_id);

/// A query with the SigV4 query-signing parameters taken out.
struct stripped_query {
    std::string rest;        ///< the other parameters, still encoded, in their order
    std::string credential;  ///< the decoded `X-Amz-Credential`, empty when absent
};

/// Takes out of `encoded_query` (without '?') the seven parameters of a SigV4 query-signed
/// request (`X-Amz-Algorithm`, `-Credential`, `-Date`, `-Expires`, `-SignedHeaders`,
/// `-Signature`, `-Security-Token`): the client's signature for the gateway, part of no
/// operation, which the gateway replaces by its own in headers. Names are compared after
/// percent-decoding and case-sensitively, spelled as AWS documents them (its "Common Parameters")
/// and as every signer writes them (botocore, the JavaScript SDK, aws4fetch); a name cased any
/// other way is no signing parameter, so it stays, and an operation without a query refuses it as
/// before. When nothing is taken out, `rest` is `encoded_query` byte for byte.
/// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
stripped_query strip_sigv4_query(std::string_view encoded_query);

/// Parses `target` (origin-form: path and optional query), after an optional region prefix. Labels
/// may arrive raw (`a:b`, as AnthropicBedrock sends them) or percent-encoded (`a%3Ab`); both give
/// the same wire path. Empty segments where an endpoint URL's path meets the API path are absent
/// (`//model/...`, `/eu-west-1//model/...`), and the SigV4 query-signing parameters are dropped
/// (strip_sigv4_query) before the operation's query rule applies. Errors: 404
/// UnknownOperationException for paths/methods outside the runtime API, 400 ValidationException
/// for malformed targets or labels (bad escapes, control characters, `..`, empty or over-long
/// labels) and for a query an operation does not take.
result<runtime_request> parse_runtime_target(boost::beast::http::verb method,
                                             std::string_view target);

}  // namespace bgw::routing
