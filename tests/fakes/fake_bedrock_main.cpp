// fake_bedrock: the in-process fake as a standalone upstream for end-to-end tests with real SDKs.
//
//   fake_bedrock --access-key K --secret-key S [--session-token T] [--regions r1,r2]
//                [--batch-polls N] [--bearer-token X] [--tls-cert FILE --tls-key FILE]
//                [--rcvbuf BYTES]
//
// One listener serves the Bedrock runtime, the control plane's batch jobs and a path-style S3
// store (see fake_bedrock.hpp); --batch-polls is how many GetModelInvocationJob polls answer
// InProgress before a job finishes (default 1). --bearer-token also accepts Bedrock requests
// carrying `Authorization: Bearer X` (a Bedrock API key); with it the keys may be left out, and
// then only bearer requests are accepted. --tls-cert/--tls-key (PEM files) serve HTTPS, as
// Bedrock does; --rcvbuf sets a small receive window, so that what is sent to it is written in
// part-writes.
//
// Prints `listening on 127.0.0.1:PORT` once, then one JSON line per request (what the upstream
// saw: method, wire path, query, scope region and service, the auth scheme ("sigv4", "bearer" or
// ""; the bearer key itself is never printed), whether the signature verified, body
// hash, the headers except Authorization, for S3 requests the decoded bucket and key, and
// whether a CreateModelInvocationJob really created a job), and an `{"event":"stream_end",...}`
// line when a streamed response ends (parts sent, completed, whether the peer closed first), so
// tests can assert on it. Exits 0 on SIGTERM or SIGINT.

#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <string>
#include <string_view>

#include "fakes/fake_bedrock.hpp"
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <signal.h>

namespace {

using bgw::test::recorded_request;

void usage() {
    std::fprintf(stderr,
                 "usage: fake_bedrock --access-key K --secret-key S [--session-token T] "
                 "[--regions us-east-1,eu-west-1] [--batch-polls N] [--bearer-token X] "
                 "[--tls-cert FILE --tls-key FILE] [--rcvbuf BYTES]\n");
}

std::string to_lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

bool read_file(const std::string& path, std::string& out) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return true;
}

bool parse_count(const std::string& value, std::size_t& n) {
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    return ec == std::errc{} && end == value.data() + value.size();
}

void write_string(rapidjson::Writer<rapidjson::StringBuffer>& w, std::string_view s) {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

std::string log_line(const recorded_request& r) {
    // Repeated headers are joined with ',' as HTTP allows; Authorization stays out of the log,
    // its non-secret part (the access key id) is reported on its own.
    std::map<std::string, std::string> headers;
    for (const auto& h : r.headers) {
        auto name = to_lower(h.name);
        if (name == "authorization") continue;
        auto [it, inserted] = headers.try_emplace(name, h.value);
        if (!inserted) it->second += "," + h.value;
    }
    rapidjson::StringBuffer sb;
    rapidjson::Writer<rapidjson::StringBuffer> w(sb);
    w.StartObject();
    w.Key("method");
    write_string(w, r.method);
    w.Key("target");
    write_string(w, r.target);
    w.Key("wirePath");
    write_string(w, r.wire_path);
    w.Key("query");
    write_string(w, r.query);
    w.Key("region");
    write_string(w, r.region);
    w.Key("service");
    write_string(w, r.service);
    w.Key("accessKeyId");
    write_string(w, r.access_key_id);
    w.Key("auth");
    write_string(w, r.auth);
    w.Key("signatureOk");
    w.Bool(r.signature_ok);
    w.Key("errorType");
    write_string(w, r.error_type);
    w.Key("status");
    w.Uint(r.response_status);
    w.Key("requestId");
    write_string(w, r.request_id);
    w.Key("bodySha256");
    write_string(w, r.body_sha256);
    w.Key("bodyLength");
    w.Uint64(r.body.size());
    w.Key("s3Bucket");
    write_string(w, r.s3_bucket);
    w.Key("s3Key");
    write_string(w, r.s3_key);
    w.Key("createdJob");
    w.Bool(r.created_job);
    w.Key("headers");
    w.StartObject();
    for (const auto& [name, value] : headers) {
        write_string(w, name);
        write_string(w, value);
    }
    w.EndObject();
    w.EndObject();
    return sb.GetString();
}

void print_request(const recorded_request& r) {
    // Runs on the server thread before the response is written, so by the time a client has
    // its response the line is already in the pipe.
    std::cout << log_line(r) << std::endl;
}

void print_stream_outcome(const bgw::test::stream_outcome& o) {
    rapidjson::StringBuffer sb;
    rapidjson::Writer<rapidjson::StringBuffer> w(sb);
    w.StartObject();
    w.Key("event");
    w.String("stream_end");
    w.Key("requestId");
    write_string(w, o.request_id);
    w.Key("partsTotal");
    w.Uint64(o.parts_total);
    w.Key("partsSent");
    w.Uint64(o.parts_sent);
    w.Key("completed");
    w.Bool(o.completed);
    w.Key("peerClosed");
    w.Bool(o.peer_closed);
    w.Key("elapsedMs");
    w.Int64(o.elapsed.count());
    w.EndObject();
    std::cout << sb.GetString() << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
    bgw::test::fake_options opts;
    opts.credentials = {};
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            usage();
            return 0;
        }
        if (i + 1 >= argc) {
            usage();
            return 2;
        }
        std::string value = argv[++i];
        if (arg == "--access-key") {
            opts.credentials.access_key_id = value;
        } else if (arg == "--secret-key") {
            opts.credentials.secret_access_key = value;
        } else if (arg == "--session-token") {
            opts.credentials.session_token = value;
        } else if (arg == "--bearer-token") {
            if (value.empty()) {
                std::fprintf(stderr, "fake_bedrock: --bearer-token takes a non-empty key\n");
                return 2;
            }
            opts.bearer_token = value;
        } else if (arg == "--tls-cert" || arg == "--tls-key") {
            auto& pem = arg == "--tls-cert" ? opts.tls_cert_pem : opts.tls_key_pem;
            if (!read_file(value, pem)) {
                std::fprintf(stderr, "fake_bedrock: cannot read %s\n", value.c_str());
                return 2;
            }
        } else if (arg == "--rcvbuf") {
            if (!parse_count(value, opts.receive_buffer_bytes)) {
                std::fprintf(stderr, "fake_bedrock: --rcvbuf takes a number, not %s\n",
                             value.c_str());
                return 2;
            }
        } else if (arg == "--batch-polls") {
            unsigned n = 0;
            auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
            if (ec != std::errc{} || end != value.data() + value.size()) {
                std::fprintf(stderr, "fake_bedrock: --batch-polls takes a number, not %s\n",
                             value.c_str());
                return 2;
            }
            opts.batch_in_progress_polls = n;
        } else if (arg == "--regions") {
            opts.regions.clear();
            std::size_t start = 0;
            while (start <= value.size()) {
                auto comma = value.find(',', start);
                auto region = value.substr(start, comma - start);
                if (!region.empty()) opts.regions.push_back(region);
                if (comma == std::string::npos) break;
                start = comma + 1;
            }
        } else {
            std::fprintf(stderr, "fake_bedrock: unknown option %s\n", argv[i - 1]);
            usage();
            return 2;
        }
    }
    // Keys are needed unless a bearer key is given; half a key pair is always a mistake.
    const bool no_keys =
        opts.credentials.access_key_id.empty() && opts.credentials.secret_access_key.empty();
    const bool both_keys =
        !opts.credentials.access_key_id.empty() && !opts.credentials.secret_access_key.empty();
    if (!(both_keys || (no_keys && !opts.bearer_token.empty())) || opts.regions.empty() ||
        opts.tls_cert_pem.empty() != opts.tls_key_pem.empty()) {
        usage();
        return 2;
    }

    // Block the signals before the server thread exists so it inherits the mask and sigwait()
    // below is the only place they are delivered.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    bgw::test::fake_bedrock fake(opts);
    fake.set_observer(print_request);
    fake.set_stream_observer(print_stream_outcome);
    try {
        fake.start();  // also loads the certificate and key: a bad one fails here
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fake_bedrock: cannot listen: %s\n", e.what());
        return 2;
    }
    std::cout << "listening on 127.0.0.1:" << fake.port() << std::endl;

    int sig = 0;
    sigwait(&signals, &sig);
    fake.stop();
    return 0;
}
