// The fake's S3 object store and batch inference jobs (routes documented in fake_bedrock.hpp).

#include "fakes/fake_batch.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <random>

#include <openssl/evp.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace bgw::test {

namespace {

using json_writer = rapidjson::Writer<rapidjson::StringBuffer>;

constexpr std::string_view fake_account = "123456789012";
constexpr std::string_view record_error_marker = "fake-record-error";
constexpr std::string_view failing_model = "fake-batch-fail";

void write_string(json_writer& w, std::string_view s) {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

void write_raw(json_writer& w, std::string_view json) {
    // Only ever JSON the fake serialised itself from a parsed value, so always well-formed.
    w.RawValue(json.data(), json.size(), rapidjson::kObjectType);
}

std::string to_json(const rapidjson::Value& v) {
    rapidjson::StringBuffer sb;
    json_writer w(sb);
    v.Accept(w);
    return {sb.GetString(), sb.GetSize()};
}

fake_response json_response(std::string body) {
    fake_response r;
    r.headers.push_back({"Content-Type", "application/json"});
    r.body = std::move(body);
    return r;
}

std::string random_chars(std::size_t n, std::string_view alphabet) {
    // Ids only need to be unique within a test run, not unpredictable.
    thread_local std::mt19937_64 rng{std::random_device{}()};
    std::string out(n, '0');
    for (auto& c : out) c = alphabet[rng() % alphabet.size()];
    return out;
}

std::uint64_t estimate_tokens(std::size_t bytes) { return std::max<std::uint64_t>(1, bytes / 4); }

std::chrono::sys_seconds now() {
    return std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
}

std::string format_time(std::chrono::sys_seconds t, const char* format) {
    std::time_t tt = std::chrono::system_clock::to_time_t(t);
    std::tm utc{};
    gmtime_r(&tt, &utc);
    std::array<char, 64> buf{};
    auto n = std::strftime(buf.data(), buf.size(), format, &utc);
    return {buf.data(), n};
}

std::string iso8601(std::chrono::sys_seconds t) { return format_time(t, "%Y-%m-%dT%H:%M:%SZ"); }
std::string http_date(std::chrono::sys_seconds t) {
    return format_time(t, "%a, %d %b %Y %H:%M:%S GMT");
}

std::string md5_hex(std::string_view data) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_md5(), nullptr);
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
        out.push_back(digits[md[i] >> 4]);
        out.push_back(digits[md[i] & 0xf]);
    }
    return out;
}

// Text content only (the fake writes no attributes), so quotes stay as they are, as S3 has them.
std::string xml_escape(std::string_view s) {
    std::string out;
    for (char c : s) {
        if (c == '&')
            out += "&amp;";
        else if (c == '<')
            out += "&lt;";
        else if (c == '>')
            out += "&gt;";
        else
            out.push_back(c);
    }
    return out;
}

// S3's request ids: 16 upper-case hex digits, plus the opaque x-amz-id-2.
std::vector<aws::header> s3_id_headers(const std::string& request_id) {
    return {{"x-amz-request-id", request_id},
            {"x-amz-id-2", random_chars(56,
                                        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                        "0123456789+/")}};
}

fake_response s3_error(unsigned status,
                       std::string_view code,
                       std::string_view message,
                       std::string_view extra_xml = {}) {
    auto id = random_chars(16, "0123456789ABCDEF");
    fake_response r;
    r.status = status;
    r.headers = s3_id_headers(id);
    r.headers.push_back({"Content-Type", "application/xml"});
    r.body = R"(<?xml version="1.0" encoding="UTF-8"?>)";
    r.body += "\n<Error><Code>" + xml_escape(code) + "</Code><Message>" + xml_escape(message) +
              "</Message>" + std::string(extra_xml) + "<RequestId>" + id + "</RequestId></Error>";
    return r;
}

fake_response s3_ok() {
    fake_response r;
    r.headers = s3_id_headers(random_chars(16, "0123456789ABCDEF"));
    return r;
}

bool query_has(std::string_view query, std::string_view name) {
    while (!query.empty()) {
        auto amp = query.find('&');
        auto pair = query.substr(0, amp);
        if (pair.substr(0, pair.find('=')) == name) return true;
        if (amp == std::string_view::npos) break;
        query.remove_prefix(amp + 1);
    }
    return false;
}

// `s3://bucket/key`; the key may be empty (a bucket or prefix URI).
std::optional<detail::s3_location> parse_s3_uri(std::string_view uri) {
    constexpr std::string_view scheme = "s3://";
    if (!uri.starts_with(scheme)) return std::nullopt;
    uri.remove_prefix(scheme.size());
    auto slash = uri.find('/');
    detail::s3_location loc{std::string(uri.substr(0, slash)), ""};
    if (slash != std::string_view::npos) loc.key = std::string(uri.substr(slash + 1));
    if (loc.bucket.empty()) return std::nullopt;
    return loc;
}

fake_response validation(std::string_view message) {
    return make_error(400, "ValidationException", message);
}

std::string null_member(std::string_view path) {
    return "1 validation error detected: Value null at '" + std::string(path) +
           "' failed to satisfy constraint: Member must not be null";
}

std::string bad_value(std::string_view path, std::string_view value, std::string_view constraint) {
    return "1 validation error detected: Value '" + std::string(value) + "' at '" +
           std::string(path) + "' failed to satisfy constraint: " + std::string(constraint);
}

const rapidjson::Value* member(const rapidjson::Value& obj, const char* name) {
    if (!obj.IsObject()) return nullptr;
    auto it = obj.FindMember(name);
    return it == obj.MemberEnd() || it->value.IsNull() ? nullptr : &it->value;
}

std::optional<std::string_view> string_member(const rapidjson::Value& obj, const char* name) {
    auto* v = member(obj, name);
    if (!v || !v->IsString()) return std::nullopt;
    return std::string_view(v->GetString(), v->GetStringLength());
}

bool valid_job_name(std::string_view name) {
    // The model's pattern [a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}, at most 63 long.
    auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
    return !name.empty() && name.size() <= 63 && alnum(name.front()) &&
           std::all_of(name.begin(), name.end(),
                       [&](char c) { return alnum(c) || c == '+' || c == '-' || c == '.'; });
}

std::string basename(std::string_view key) {
    auto slash = key.rfind('/');
    return std::string(slash == std::string_view::npos ? key : key.substr(slash + 1));
}

}  // namespace

fake_response make_s3_error(unsigned status, std::string_view code, std::string_view message) {
    return s3_error(status, code, message);
}

namespace detail {

std::optional<s3_location> parse_s3_path(std::string_view wire_path) {
    if (!wire_path.starts_with('/')) return std::nullopt;
    wire_path.remove_prefix(1);
    auto slash = wire_path.find('/');
    s3_location loc{percent_decode(wire_path.substr(0, slash)), ""};
    if (slash != std::string_view::npos) loc.key = percent_decode(wire_path.substr(slash + 1));
    return loc;
}

struct fake_store::job {
    fake_batch_job info;
    s3_location input;
    s3_location output;
    std::string input_config_json;   // echoed as sent
    std::string output_config_json;  // echoed as sent
    std::optional<std::int64_t> timeout_hours;
    std::chrono::sys_seconds submit_time{};
    std::chrono::sys_seconds last_modified{};
    std::chrono::sys_seconds end_time{};
    bool finished = false;
};

fake_store::fake_store() = default;
fake_store::~fake_store() = default;

// --- S3 --------------------------------------------------------------------------------------

void fake_store::put(std::string_view bucket,
                     std::string_view key,
                     std::string body,
                     std::string content_type) {
    std::lock_guard lock(mutex_);
    put_locked(std::string(bucket), std::string(key), std::move(body), std::move(content_type));
}

void fake_store::put_locked(std::string bucket,
                            std::string key,
                            std::string body,
                            std::string type) {
    stored_s3_object obj;
    obj.bucket = bucket;
    obj.key = key;
    obj.etag = "\"" + md5_hex(body) + "\"";
    obj.body = std::move(body);
    obj.content_type = type.empty() ? "binary/octet-stream" : std::move(type);
    obj.last_modified = now();
    objects_[{std::move(bucket), std::move(key)}] = std::move(obj);
}

std::optional<stored_s3_object> fake_store::get(std::string_view bucket,
                                                std::string_view key) const {
    std::lock_guard lock(mutex_);
    return get_locked(bucket, key);
}

std::optional<stored_s3_object> fake_store::get_locked(std::string_view bucket,
                                                       std::string_view key) const {
    auto it = objects_.find({std::string(bucket), std::string(key)});
    if (it == objects_.end()) return std::nullopt;
    return it->second;
}

std::vector<stored_s3_object> fake_store::list(std::string_view bucket,
                                               std::string_view prefix) const {
    std::lock_guard lock(mutex_);
    std::vector<stored_s3_object> out;
    for (const auto& [k, obj] : objects_)
        if ((bucket.empty() || k.first == bucket) && k.second.starts_with(prefix))
            out.push_back(obj);
    return out;
}

fake_response fake_store::s3_route(const recorded_request& req) {
    constexpr std::string_view only =
        "fake-bedrock's S3 serves only object PUT and GET, path style: /{bucket}/{key}";
    auto loc = parse_s3_path(req.wire_path);
    if (!loc || loc->bucket.empty() || loc->key.empty())
        return s3_error(501, "NotImplemented", only);
    for (std::string_view sub : {"uploads", "uploadId", "partNumber", "tagging", "acl"})
        if (query_has(req.query, sub)) return s3_error(501, "NotImplemented", only);

    if (req.method == "PUT") {
        auto type = req.header("content-type").value_or("binary/octet-stream");
        std::lock_guard lock(mutex_);
        put_locked(loc->bucket, loc->key, req.body, std::move(type));
        auto r = s3_ok();
        r.headers.push_back({"ETag", objects_[{loc->bucket, loc->key}].etag});
        return r;
    }
    if (req.method == "GET") {
        auto obj = get(loc->bucket, loc->key);
        if (!obj)
            return s3_error(404, "NoSuchKey", "The specified key does not exist.",
                            "<Key>" + xml_escape(loc->key) + "</Key>");
        auto r = s3_ok();
        r.headers.push_back({"Content-Type", obj->content_type});
        r.headers.push_back({"ETag", obj->etag});
        r.headers.push_back({"Last-Modified", http_date(obj->last_modified)});
        r.headers.push_back({"Accept-Ranges", "bytes"});
        r.body = std::move(obj->body);
        return r;
    }
    auto r = s3_error(405, "MethodNotAllowed",
                      "The specified method is not allowed against this resource.");
    if (req.method == "HEAD") r.body.clear();  // a HEAD response has no body to read
    return r;
}

// --- batch jobs ----------------------------------------------------------------------------------

std::size_t fake_store::jobs_created() const {
    std::lock_guard lock(mutex_);
    return created_;
}

std::vector<fake_batch_job> fake_store::jobs() const {
    std::lock_guard lock(mutex_);
    std::vector<fake_batch_job> out;
    for (const auto& j : jobs_) out.push_back(j->info);
    return out;
}

fake_response fake_store::create_job(const recorded_request& req, bool& created) {
    created = false;
    rapidjson::Document doc;
    doc.Parse(req.body.data(), req.body.size());
    if (doc.HasParseError() || !doc.IsObject())
        return validation("The request body is not a JSON object.");

    auto job_name = string_member(doc, "jobName");
    if (!job_name) return validation(null_member("jobName"));
    if (!valid_job_name(*job_name))
        return validation(bad_value("jobName", *job_name,
                                    "Member must have length between 1 and 63 and satisfy regular "
                                    "expression pattern: [a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\\+\\-\\.])"
                                    "{0,63}"));
    auto role_arn = string_member(doc, "roleArn");
    if (!role_arn || role_arn->empty()) return validation(null_member("roleArn"));
    if (!role_arn->starts_with("arn:") || role_arn->find(":iam::") == std::string_view::npos ||
        role_arn->find(":role/") == std::string_view::npos)
        return validation(bad_value("roleArn", *role_arn,
                                    "Member must satisfy regular expression pattern: "
                                    "arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+"));
    auto model_id = string_member(doc, "modelId");
    if (!model_id || model_id->empty()) return validation(null_member("modelId"));

    const auto* in_config = member(doc, "inputDataConfig");
    const auto* in_s3 = in_config ? member(*in_config, "s3InputDataConfig") : nullptr;
    auto in_uri = in_s3 ? string_member(*in_s3, "s3Uri") : std::nullopt;
    if (!in_uri) return validation(null_member("inputDataConfig.s3InputDataConfig.s3Uri"));
    auto input = parse_s3_uri(*in_uri);
    if (!input || input->key.empty() || input->key.ends_with('/'))
        return validation(bad_value("inputDataConfig.s3InputDataConfig.s3Uri", *in_uri,
                                    "fake-bedrock takes one input object: s3://bucket/key"));
    if (auto format = string_member(*in_s3, "s3InputFormat"); format && *format != "JSONL")
        return validation(bad_value("inputDataConfig.s3InputDataConfig.s3InputFormat", *format,
                                    "Member must satisfy enum value set: [JSONL]"));

    const auto* out_config = member(doc, "outputDataConfig");
    const auto* out_s3 = out_config ? member(*out_config, "s3OutputDataConfig") : nullptr;
    auto out_uri = out_s3 ? string_member(*out_s3, "s3Uri") : std::nullopt;
    if (!out_uri) return validation(null_member("outputDataConfig.s3OutputDataConfig.s3Uri"));
    auto output = parse_s3_uri(*out_uri);
    if (!output)
        return validation(bad_value("outputDataConfig.s3OutputDataConfig.s3Uri", *out_uri,
                                    "Member must satisfy regular expression pattern: s3://..."));

    std::string invocation_type;
    if (const auto* t = member(doc, "modelInvocationType")) {
        if (!t->IsString() || (std::string_view(t->GetString()) != "InvokeModel" &&
                               std::string_view(t->GetString()) != "Converse"))
            return validation(bad_value("modelInvocationType", t->IsString() ? t->GetString() : "",
                                        "Member must satisfy enum value set: [InvokeModel, "
                                        "Converse]"));
        invocation_type = t->GetString();
    }
    std::optional<std::int64_t> timeout_hours;
    if (const auto* t = member(doc, "timeoutDurationInHours")) {
        if (!t->IsInt64() || t->GetInt64() < 24 || t->GetInt64() > 168)
            return validation(bad_value("timeoutDurationInHours", to_json(*t),
                                        "Member must have value between 24 and 168"));
        timeout_hours = t->GetInt64();
    }
    std::string token;
    if (const auto* t = member(doc, "clientRequestToken")) {
        if (!t->IsString() || t->GetStringLength() < 1 || t->GetStringLength() > 256)
            return validation(bad_value("clientRequestToken", t->IsString() ? t->GetString() : "",
                                        "Member must have length between 1 and 256"));
        token = t->GetString();
    }

    auto arn_response = [](const std::string& arn) {
        rapidjson::StringBuffer sb;
        json_writer w(sb);
        w.StartObject();
        w.Key("jobArn");
        write_string(w, arn);
        w.EndObject();
        return json_response(sb.GetString());
    };

    std::lock_guard lock(mutex_);
    if (!token.empty()) {
        if (auto it = by_token_.find(token); it != by_token_.end())
            return arn_response(it->second->info.job_arn);  // idempotent replay: nothing new
    }
    if (!get_locked(input->bucket, input->key))
        return validation("The provided input S3 URI " + std::string(*in_uri) +
                          " does not exist or is not accessible.");

    auto j = std::make_unique<job>();
    std::string id;
    do {
        id = random_chars(12, "abcdefghijklmnopqrstuvwxyz0123456789");
    } while (by_id_.contains(id));
    auto region = req.region.empty() ? std::string("us-east-1") : req.region;
    j->info.job_id = id;
    j->info.job_arn = "arn:aws:bedrock:" + region + ":" + std::string(fake_account) +
                      ":model-invocation-job/" + id;
    j->info.job_name = std::string(*job_name);
    j->info.model_id = std::string(*model_id);
    j->info.role_arn = std::string(*role_arn);
    j->info.client_request_token = token;
    j->info.model_invocation_type = invocation_type;
    j->info.input_s3_uri = std::string(*in_uri);
    j->info.output_s3_uri = std::string(*out_uri);
    j->info.status = "Submitted";
    j->input = std::move(*input);
    j->output = std::move(*output);
    j->input_config_json = to_json(*in_config);
    j->output_config_json = to_json(*out_config);
    j->timeout_hours = timeout_hours;
    j->submit_time = j->last_modified = now();

    auto* raw = j.get();
    jobs_.push_back(std::move(j));
    by_id_.emplace(id, raw);
    if (!token.empty()) by_token_.emplace(token, raw);
    ++created_;
    created = true;
    return arn_response(raw->info.job_arn);
}

fake_response fake_store::get_job(std::string_view identifier, unsigned in_progress_polls) {
    constexpr std::string_view arn_marker = ":model-invocation-job/";
    std::string_view id = identifier;
    if (auto at = id.find(arn_marker); id.starts_with("arn:") && at != std::string_view::npos)
        id.remove_prefix(at + arn_marker.size());

    std::lock_guard lock(mutex_);
    auto it = by_id_.find(id);
    if (it == by_id_.end())
        return make_error(404, "ResourceNotFoundException",
                          "The specified model invocation job " + std::string(identifier) +
                              " could not be found.");
    auto& j = *it->second;
    ++j.info.get_count;
    if (!j.finished) {
        if (j.info.get_count == 1) {
            j.info.status = "Submitted";
        } else if (j.info.get_count <= std::uint64_t{in_progress_polls} + 1) {
            if (j.info.status != "InProgress") j.last_modified = now();
            j.info.status = "InProgress";
        } else {
            finish_locked(j);
        }
    }

    const auto& info = j.info;
    rapidjson::StringBuffer sb;
    json_writer w(sb);
    w.StartObject();
    w.Key("jobArn");
    write_string(w, info.job_arn);
    w.Key("jobName");
    write_string(w, info.job_name);
    w.Key("modelId");
    write_string(w, info.model_id);
    if (!info.client_request_token.empty()) {
        w.Key("clientRequestToken");
        write_string(w, info.client_request_token);
    }
    w.Key("roleArn");
    write_string(w, info.role_arn);
    w.Key("status");
    write_string(w, info.status);
    if (!info.message.empty()) {
        w.Key("message");
        write_string(w, info.message);
    }
    w.Key("submitTime");
    write_string(w, iso8601(j.submit_time));
    w.Key("lastModifiedTime");
    write_string(w, iso8601(j.last_modified));
    if (j.finished) {
        w.Key("endTime");
        write_string(w, iso8601(j.end_time));
    }
    w.Key("inputDataConfig");
    write_raw(w, j.input_config_json);
    w.Key("outputDataConfig");
    write_raw(w, j.output_config_json);
    if (j.timeout_hours) {
        w.Key("timeoutDurationInHours");
        w.Int64(*j.timeout_hours);
    }
    if (!info.model_invocation_type.empty()) {
        w.Key("modelInvocationType");
        write_string(w, info.model_invocation_type);
    }
    if (info.status == "Completed" || info.status == "PartiallyCompleted") {
        w.Key("totalRecordCount");
        w.Uint64(info.total_records);
        w.Key("processedRecordCount");
        w.Uint64(info.total_records);
        w.Key("successRecordCount");
        w.Uint64(info.success_records);
        w.Key("errorRecordCount");
        w.Uint64(info.error_records);
    }
    w.EndObject();
    return json_response(sb.GetString());
}

// Runs the job: reads its input object, writes `<jobId>/<input>.out` and the manifest.
void fake_store::finish_locked(job& j) {
    j.finished = true;
    j.end_time = j.last_modified = now();
    auto fail = [&j](std::string message) {
        j.info.status = "Failed";
        j.info.message = std::move(message);
    };
    if (j.info.model_id == failing_model) return fail("fake-bedrock scripted batch job failure");
    auto input = get_locked(j.input.bucket, j.input.key);
    if (!input) return fail("The input S3 object " + j.info.input_s3_uri + " does not exist.");

    const bool converse = j.info.model_invocation_type == "Converse";
    std::string out;
    std::uint64_t total = 0, errors = 0, in_tokens = 0, out_tokens = 0;
    std::string_view rest = input->body;
    for (std::size_t line_no = 1; !rest.empty(); ++line_no) {
        auto nl = rest.find('\n');
        auto line = rest.substr(0, nl);
        rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
        if (std::all_of(line.begin(), line.end(),
                        [](char c) { return std::isspace(static_cast<unsigned char>(c)); }))
            continue;
        rapidjson::Document rec;
        rec.Parse(line.data(), line.size());
        const auto* model_input = rec.HasParseError() ? nullptr : member(rec, "modelInput");
        const auto* record_id = rec.HasParseError() ? nullptr : member(rec, "recordId");
        if (!model_input || !model_input->IsObject() || (record_id && !record_id->IsString()))
            return fail("Line " + std::to_string(line_no) + " of " + j.info.input_s3_uri +
                        " is not a JSON object with a modelInput object and a string recordId.");
        std::string id = record_id
                             ? std::string(record_id->GetString(), record_id->GetStringLength())
                             : random_chars(11, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
        auto input_json = to_json(*model_input);
        ++total;

        rapidjson::StringBuffer sb;
        json_writer w(sb);
        w.StartObject();
        w.Key("recordId");
        write_string(w, id);
        w.Key("modelInput");
        write_raw(w, input_json);
        if (input_json.find(record_error_marker) != std::string::npos) {
            ++errors;
            w.Key("error");
            w.StartObject();
            w.Key("errorCode");
            w.Uint(400);
            w.Key("errorMessage");
            w.String("fake-bedrock scripted record error");
            w.EndObject();
        } else {
            const auto n = estimate_tokens(input_json.size());
            in_tokens += n;
            out_tokens += 3;
            w.Key("modelOutput");
            w.StartObject();
            if (converse) {
                w.Key("output");
                w.StartObject();
                w.Key("message");
                w.StartObject();
                w.Key("role");
                w.String("assistant");
                w.Key("content");
                w.StartArray();
                w.StartObject();
                w.Key("text");
                w.String("batch answer");
                w.EndObject();
                w.EndArray();
                w.EndObject();
                w.EndObject();
                w.Key("stopReason");
                w.String("end_turn");
                w.Key("usage");
                w.StartObject();
                w.Key("inputTokens");
                w.Uint64(n);
                w.Key("outputTokens");
                w.Uint64(3);
                w.Key("totalTokens");
                w.Uint64(n + 3);
                w.EndObject();
            } else {
                w.Key("fakeBatch");
                w.Bool(true);
                w.Key("recordId");
                write_string(w, id);
                w.Key("modelId");
                write_string(w, j.info.model_id);
            }
            w.EndObject();
        }
        w.EndObject();
        out.append(sb.GetString(), sb.GetSize());
        out.push_back('\n');
    }
    if (total == 0) return fail("The input S3 object " + j.info.input_s3_uri + " has no records.");

    auto prefix = j.output.key;
    if (!prefix.empty() && !prefix.ends_with('/')) prefix.push_back('/');
    prefix += j.info.job_id + "/";
    auto out_key = prefix + basename(j.input.key) + ".out";
    put_locked(j.output.bucket, out_key, std::move(out), "application/octet-stream");

    rapidjson::StringBuffer sb;
    json_writer w(sb);
    w.StartObject();
    w.Key("totalRecordCount");
    w.Uint64(total);
    w.Key("processedRecordCount");
    w.Uint64(total);
    w.Key("successRecordCount");
    w.Uint64(total - errors);
    w.Key("errorRecordCount");
    w.Uint64(errors);
    w.Key("inputTokenCount");
    w.Uint64(in_tokens);
    w.Key("outputTokenCount");
    w.Uint64(out_tokens);
    w.EndObject();
    put_locked(j.output.bucket, prefix + "manifest.json.out", sb.GetString(),
               "application/octet-stream");

    j.info.output_object_uri = "s3://" + j.output.bucket + "/" + out_key;
    j.info.total_records = total;
    j.info.success_records = total - errors;
    j.info.error_records = errors;
    j.info.status = errors == 0 ? "Completed" : "PartiallyCompleted";
}

}  // namespace detail

}  // namespace bgw::test
