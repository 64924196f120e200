// The `/gateway/batch/...` answers (batch::answer) over a book in every record state: for each
// method, target and caller the status, the error type, the key body fields and headers, and
// the journal line (only a cancel writes one) with its answer when that line cannot be written.

#include "bgw/batch/api.hpp"

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace {

using namespace bgw::batch;
namespace http = boost::beast::http;

record rec(std::string id, std::string owner) {
    record r;
    r.id = std::move(id);
    r.region = "us-west-2";
    r.model = "m";
    r.operation = "InvokeModel";
    r.input = R"({"prompt":"hi"})";
    r.accepted_ms = 1;
    r.owner = std::move(owner);
    return r;
}

/// Records `queued`, `theirs` (owned by "other"), `cancelled`, and in job `j1` (status
/// InProgress): `running`, `done`, `failed` (errorCode 429), `odd` (an errorCode outside 4xx/5xx
/// and no message); every record but `theirs` is owned by "app".
book sample() {
    book b;
    for (const auto* id : {"queued", "cancelled", "running", "done", "failed", "odd"})
        EXPECT_TRUE(b.apply(accept_event(rec(id, "app"))));
    EXPECT_TRUE(b.apply(accept_event(rec("theirs", "other"))));
    EXPECT_TRUE(b.apply(cancel_event("cancelled")));
    job j;
    j.id = "j1";
    j.region = "us-west-2";
    j.model = "m";
    j.operation = "InvokeModel";
    j.records = {"running", "done", "failed", "odd"};
    EXPECT_TRUE(b.apply(job_event(j)));
    EXPECT_TRUE(
        b.apply(submitted_event("j1", "arn:aws:bedrock:us-west-2:1:model-invocation-job/x")));
    EXPECT_TRUE(b.apply(status_event("j1", "InProgress")));
    EXPECT_TRUE(b.apply(result_event("done", R"({"completion":"ok"})", "")));
    EXPECT_TRUE(
        b.apply(result_event("failed", "", R"({"errorCode":429,"errorMessage":"slow down"})")));
    EXPECT_TRUE(b.apply(result_event("odd", "", R"({"errorCode":200})")));
    return b;
}

bgw::config::batch_config config() {
    bgw::config::batch_config c;
    c.poll_interval = std::chrono::milliseconds(2'500);
    return c;
}

struct row {
    std::string name;
    http::verb method = http::verb::get;
    std::string target;
    std::string caller;
    unsigned status = 0;
    std::string error_type;                      ///< x-amzn-ErrorType, or "" for none
    std::map<std::string, std::string> body;     ///< string fields the body must hold
    std::map<std::string, std::string> headers;  ///< headers the response must hold
    std::optional<std::string> event;            ///< the journal line asked for

    row& is(unsigned s, std::string type = "") {
        status = s;
        error_type = std::move(type);
        return *this;
    }
    /// An error answer: its status, x-amzn-ErrorType and `message`.
    row& fails(unsigned s, std::string type, std::string message) {
        return is(s, std::move(type)).field("message", std::move(message));
    }
    row& field(std::string k, std::string v) {
        body[std::move(k)] = std::move(v);
        return *this;
    }
    /// A record answer's `recordId` and `status`.
    row& about(std::string id, std::string state) {
        return field("recordId", std::move(id)).field("status", std::move(state));
    }
    row& header(std::string k, std::string v) {
        headers[std::move(k)] = std::move(v);
        return *this;
    }
    row& journals(std::string line) {
        event = std::move(line);
        return *this;
    }
};

row ask(std::string name, http::verb m, std::string target, std::string caller) {
    row r;
    r.name = std::move(name);
    r.method = m;
    r.target = std::move(target);
    r.caller = std::move(caller);
    return r;
}

const std::string no_resource =
    "no such batch resource: use /gateway/batch/records/{recordId} or /gateway/batch/jobs";
const std::string records = "/gateway/batch/records/";

std::vector<row> rows() {
    using v = http::verb;
    return {
        ask("jobs", v::get, "/gateway/batch/jobs", "").is(200),
        ask("jobs_with_query", v::get, "/gateway/batch/jobs?x=1", "").is(200),
        ask("jobs_not_get", v::post, "/gateway/batch/jobs", "")
            .fails(405, "ValidationException", "use GET"),
        ask("unknown_resource", v::get, "/gateway/batch/other", "")
            .fails(404, "UnknownOperationException", no_resource),
        ask("record_without_id", v::get, records, "")
            .fails(404, "UnknownOperationException", no_resource),
        ask("record_sub_path", v::get, records + "queued/x", "")
            .fails(404, "UnknownOperationException", no_resource),
        ask("unknown_record", v::get, records + "nope", "app")
            .fails(404, "ResourceNotFoundException", "no record nope"),
        ask("another_keys_record", v::get, records + "theirs", "app")
            .fails(404, "ResourceNotFoundException", "no record theirs"),
        ask("another_keys_cancel", v::delete_, records + "theirs", "app")
            .fails(404, "ResourceNotFoundException", "no record theirs"),
        ask("queued", v::get, records + "queued?y", "app")
            .is(202)
            .about("queued", "queued")
            .header("Retry-After", "2"),
        ask("no_keys_sees_all", v::get, records + "theirs", "").is(202).field("status", "queued"),
        ask("in_job", v::get, records + "running", "app")
            .is(202)
            .field("status", "submitted")
            .field("jobId", "j1")
            .field("jobStatus", "InProgress")
            .header("Retry-After", "2"),
        ask("done", v::get, records + "done", "app")
            .is(200)
            .field("completion", "ok")
            .header("X-Gateway-Tier", "batch")
            .header("X-Gateway-Region", "us-west-2"),
        ask("cancelled", v::get, records + "cancelled", "app")
            .fails(410, "ResourceNotFoundException", "record cancelled was cancelled"),
        ask("failed", v::get, records + "failed", "app")
            .fails(429, "BatchRecordFailed", "slow down")
            .about("failed", "failed"),
        ask("failed_odd_code", v::get, records + "odd", "app")
            .fails(500, "BatchRecordFailed", "the record failed"),
        ask("cancel_queued", v::delete_, records + "queued", "app")
            .is(200)
            .about("queued", "cancelled")
            .journals(cancel_event("queued")),
        ask("cancel_cancelled", v::delete_, records + "cancelled", "app")
            .is(200)
            .field("status", "cancelled"),
        ask("cancel_in_job", v::delete_, records + "running", "app")
            .fails(409, "ConflictException",
                   "record running is already in job j1; it cannot be cancelled"),
        ask("record_bad_method", v::put, records + "queued", "app")
            .fails(405, "ValidationException", "use GET or DELETE"),
    };
}

class batch_api : public testing::TestWithParam<row> {};

TEST_P(batch_api, answers) {
    const auto& r = GetParam();
    const auto b = sample();
    const auto a = answer(b, config(), r.method, r.target, r.caller, "req-1");
    EXPECT_EQ(a.response.result_int(), r.status);
    EXPECT_EQ(a.response["x-amzn-ErrorType"], r.error_type);
    EXPECT_EQ(a.response["x-amzn-RequestId"], "req-1");
    EXPECT_EQ(a.response[http::field::content_type], "application/json");
    rapidjson::Document d;
    d.Parse(a.response.body().c_str());
    ASSERT_TRUE(d.IsObject()) << a.response.body();
    for (const auto& [k, want] : r.body) {
        ASSERT_TRUE(d.HasMember(k.c_str()) && d[k.c_str()].IsString()) << k;
        EXPECT_EQ(d[k.c_str()].GetString(), want) << k;
    }
    for (const auto& [h, want] : r.headers) EXPECT_EQ(a.response[h], want) << h;
    if (r.status != 202) {
        EXPECT_EQ(a.response[http::field::retry_after], "");  // only for a record in progress
    }
    ASSERT_EQ(a.event.has_value(), r.event.has_value());
    if (a.event) {
        EXPECT_EQ(a.event->line, *r.event);
        EXPECT_EQ(a.event->unwritten.status, http::status::service_unavailable);
        EXPECT_EQ(a.event->unwritten.type, "ServiceUnavailableException");
        EXPECT_EQ(a.event->unwritten.message,
                  "the batch spool cannot be written; the record was not cancelled");
    }
}

INSTANTIATE_TEST_SUITE_P(table, batch_api, testing::ValuesIn(rows()), [](const auto& param_info) {
    return std::string(param_info.param.name);
});

TEST(batch_api_jobs, lists_jobs_counting_only_the_callers_records) {
    const auto b = sample();
    auto jobs = [&](std::string_view caller) {
        auto a = answer(b, config(), http::verb::get, "/gateway/batch/jobs", caller, "r");
        rapidjson::Document d;
        d.Parse(a.response.body().c_str());
        return d;
    };
    auto all = jobs("");
    ASSERT_EQ(all["jobs"].Size(), 1u);
    const auto& j = all["jobs"][0];
    EXPECT_STREQ(j["jobId"].GetString(), "j1");
    EXPECT_STREQ(j["jobArn"].GetString(), "arn:aws:bedrock:us-west-2:1:model-invocation-job/x");
    EXPECT_STREQ(j["region"].GetString(), "us-west-2");
    EXPECT_STREQ(j["modelId"].GetString(), "m");
    EXPECT_STREQ(j["operation"].GetString(), "InvokeModel");
    EXPECT_STREQ(j["state"].GetString(), "running");
    EXPECT_STREQ(j["status"].GetString(), "InProgress");
    EXPECT_EQ(j["records"].GetUint64(), 4u);
    EXPECT_FALSE(j["onDemand"].GetBool());
    EXPECT_EQ(jobs("app")["jobs"][0]["records"].GetUint64(), 4u);
    EXPECT_EQ(jobs("other")["jobs"].Size(), 0u);  // none of its records is in a job
}

TEST(batch_api_records, a_failed_record_carries_its_error_object_and_a_retry_after_of_at_least_1) {
    const auto b = sample();
    auto failed = answer(b, config(), http::verb::get, "/gateway/batch/records/failed", "", "r");
    rapidjson::Document d;
    d.Parse(failed.response.body().c_str());
    EXPECT_EQ(d["error"]["errorCode"].GetUint(), 429u);
    auto fast = config();
    fast.poll_interval = std::chrono::milliseconds(200);
    auto queued = answer(b, fast, http::verb::get, "/gateway/batch/records/queued", "", "r");
    EXPECT_EQ(queued.response[http::field::retry_after], "1");
}

}  // namespace
