#include "bgw/cli/sign_command.hpp"

#include "bgw/aws/raw_request.hpp"
#include "bgw/aws/sign_request.hpp"

#include <chrono>
#include <istream>
#include <iterator>
#include <ostream>
#include <string>
#include <vector>

namespace bgw::cli {
namespace {

constexpr int exit_ok = 0;
constexpr int exit_bad_request = 1;
constexpr int exit_usage = 2;

constexpr std::string_view usage =
    "usage: bedrock-gateway sign --region REGION --service SERVICE [--time YYYYMMDDTHHMMSSZ]\n"
    "                            [--access-key KEY --secret-key SECRET [--session-token TOKEN]]\n"
    "Reads one raw HTTP/1.1 request (AWS SigV4 test-suite .req format) on stdin and prints it\n"
    "signed with SigV4 (.sreq format). X-Amz-Date is added from --time (default: now, UTC) when\n"
    "the request has none. Without key flags the gateway's own credentials are used.\n";

struct options {
    std::optional<std::string_view> region;
    std::optional<std::string_view> service;
    std::optional<std::string_view> time;
    std::optional<std::string_view> access_key;
    std::optional<std::string_view> secret_key;
    std::optional<std::string_view> session_token;
    bool help = false;
};

/// Where the flag `name` (`--region`...) goes in `opts`; null for an unknown flag.
std::optional<std::string_view>* option_slot(options& opts, std::string_view name) {
    if (name == "--region") return &opts.region;
    if (name == "--service") return &opts.service;
    if (name == "--time") return &opts.time;
    if (name == "--access-key") return &opts.access_key;
    if (name == "--secret-key") return &opts.secret_key;
    if (name == "--session-token") return &opts.session_token;
    return nullptr;
}

/// Parses the flags into `opts`; on failure returns the message for stderr. The message names
/// flags and positions only, never argument values: a mistyped `--secret-key` must not echo
/// the secret that follows it.
std::optional<std::string> parse_options(std::span<const std::string_view> args, options& opts) {
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string_view arg = args[i];
        if (arg == "--help" || arg == "-h") {
            opts.help = true;
            continue;
        }
        if (!arg.starts_with("--")) {
            return "unexpected argument at position " + std::to_string(i + 1);
        }
        std::string_view name = arg;
        std::optional<std::string_view> value;
        if (const auto eq = arg.find('='); eq != std::string_view::npos) {
            name = arg.substr(0, eq);
            value = arg.substr(eq + 1);
        }
        std::optional<std::string_view>* slot = option_slot(opts, name);
        if (slot == nullptr) {
            // Only the part before '=' is echoed, for the same reason as above.
            return "unknown option " + std::string(name);
        }
        if (!value) {
            if (i + 1 >= args.size()) return std::string(name) + " needs a value";
            value = args[++i];
        }
        if (slot->has_value()) return std::string(name) + " given more than once";
        if (value->empty()) return std::string(name) + " must not be empty";
        *slot = *value;
    }
    return std::nullopt;
}

/// A region or service goes into the credential scope `date/region/service/aws4_request`.
bool is_scope_part(std::string_view s) {
    for (char c : s) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
        if (!ok) return false;
    }
    return !s.empty();
}

std::optional<std::string> validate(const options& o) {
    if (!o.region) return std::string("--region is required");
    if (!o.service) return std::string("--service is required");
    if (!is_scope_part(*o.region)) return std::string("--region is not a valid region name");
    if (!is_scope_part(*o.service)) return std::string("--service is not a valid signing name");
    if (o.access_key.has_value() != o.secret_key.has_value()) {
        return std::string("--access-key and --secret-key must be given together");
    }
    if (o.session_token && !o.access_key) {
        return std::string("--session-token needs --access-key and --secret-key");
    }
    if (o.time && !aws::parse_amz_date(*o.time)) {
        return std::string("--time must look like 20150830T123600Z (UTC)");
    }
    return std::nullopt;
}

}  // namespace

int run_sign_command(std::span<const std::string_view> args,
                     std::istream& in,
                     std::ostream& out,
                     std::ostream& err,
                     const std::optional<bgw::aws::credentials>& gateway_credentials) {
    options opts;
    auto problem = parse_options(args, opts);
    if (!problem && opts.help) {
        out << usage;
        return exit_ok;
    }
    if (!problem) problem = validate(opts);
    if (problem) {
        err << "sign: " << *problem << '\n' << usage;
        return exit_usage;
    }

    aws::credentials creds;
    if (opts.access_key) {
        creds.access_key_id = *opts.access_key;
        creds.secret_access_key = *opts.secret_key;
        if (opts.session_token) creds.session_token = *opts.session_token;
    } else if (gateway_credentials) {
        creds = *gateway_credentials;
    } else {
        err << "sign: no credentials: pass --access-key and --secret-key, or configure the "
               "gateway's credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)\n";
        return exit_usage;
    }

    const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (in.bad()) {
        err << "sign: could not read the request from stdin\n";
        return exit_bad_request;
    }
    auto parsed = aws::parse_raw_request(text);
    if (!parsed) {
        err << "sign: bad request: " << parsed.error().message << '\n';
        return exit_bad_request;
    }
    aws::raw_request& req = *parsed;
    if (!aws::find_header(req.headers, "host")) {
        err << "sign: bad request: no Host header (SigV4 signs it)\n";
        return exit_bad_request;
    }

    // What the signer would add must agree with what the request already says.
    if (const auto present = aws::find_header(req.headers, "x-amz-security-token");
        present && !creds.session_token.empty() && *present != creds.session_token) {
        err << "sign: bad request: it carries an X-Amz-Security-Token that differs from the "
               "credentials' session token\n";
        return exit_bad_request;
    }
    // The request's own X-Amz-Date is what the server will check the signature against, so
    // it wins over --time.
    if (const auto date = aws::find_header(req.headers, "x-amz-date");
        date && !aws::parse_amz_date(*date)) {
        err << "sign: bad request: X-Amz-Date is not of the form 20150830T123600Z\n";
        return exit_bad_request;
    }
    const auto when =
        opts.time ? *aws::parse_amz_date(*opts.time)
                  : std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());

    std::vector<aws::header> headers = req.headers;
    auto added = aws::sign_request(headers,
                                   {.method = req.method,
                                    .wire_path = req.path(),
                                    .query = req.query(),
                                    .body = req.body,
                                    .region = *opts.region,
                                    .service = *opts.service,
                                    .time = when},
                                   creds);
    const std::string authorization = std::move(added.back().value);
    added.pop_back();
    out << aws::format_signed_request(req, added, authorization);
    out.flush();
    return exit_ok;
}

}  // namespace bgw::cli
