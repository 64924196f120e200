// The batch tier's runner: plans jobs from the spool's due groups, submits them (S3 input, then
// CreateModelInvocationJob), polls them and stores each record's result, or runs an underfull
// group record by record on demand. Each step's journal line is durable before it counts.

#include "bgw/net/batch_runner.hpp"

#include "bgw/aws/sigv4.hpp"
#include "bgw/net/aws_call.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/obs/log.hpp"
#include "bgw/policy/throttle.hpp"
#include "bgw/policy/traffic.hpp"
#include "bgw/routing/runtime_path.hpp"
#include "bgw/util/json.hpp"

#include <algorithm>
#include <cstdio>
#include <random>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/http.hpp>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace bgw::net {
namespace {

namespace http = beast::http;
using steady = std::chrono::steady_clock;

std::string new_job_id() {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    auto t = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    auto stamp = aws::format_amz_date(t);  // 20261123T131700Z
    char tail[9];
    std::snprintf(tail, sizeof tail, "%08x", static_cast<unsigned>(rng()));
    return "bgw-" + stamp.substr(0, 8) + "-" + stamp.substr(9, 6) + "-" + tail;
}

std::string error_json(unsigned code, std::string_view message) {
    rapidjson::StringBuffer b;
    rapidjson::Writer<rapidjson::StringBuffer> w(b);
    w.StartObject();
    w.Key("errorCode");
    w.Uint(code);
    w.Key("errorMessage");
    w.String(message.data(), static_cast<rapidjson::SizeType>(message.size()));
    w.EndObject();
    return {b.GetString(), b.GetSize()};
}

bool is_json(std::string_view s) {
    rapidjson::Document d;
    bgw::util::parse_json(d, std::string_view(s.data(), s.size()));
    return !d.HasParseError();
}

/// `/{bucket}/{key}` with each segment encoded once, as S3 wants it.
std::string s3_path(std::string_view bucket, std::string_view key) {
    std::string out = "/" + routing::encode_label(bucket);
    while (true) {
        auto slash = key.find('/');
        out += "/" + routing::encode_label(key.substr(0, slash));
        if (slash == std::string_view::npos) break;
        key.remove_prefix(slash + 1);
    }
    return out;
}

/// A failed call is worth trying again later (throttled, transient, or no answer at all).
bool worth_retrying(const aws_reply& r) {
    if (r.ec) return true;
    auto o = policy::classify(r.status, r.code);
    return o == policy::outcome::throttled || o == policy::outcome::transient;
}

std::string describe(const aws_reply& r) {
    if (r.ec) return r.ec.message();
    return std::to_string(r.status) + (r.code.empty() ? "" : " " + r.code);
}

std::string message_of(std::string_view body) {
    rapidjson::Document d;
    bgw::util::parse_json(d, std::string_view(body.data(), body.size()));
    if (d.HasParseError() || !d.IsObject()) return {};
    for (const char* key : {"message", "Message"}) {
        auto it = d.FindMember(key);
        if (it != d.MemberEnd() && it->value.IsString()) return it->value.GetString();
    }
    return {};
}

/// The status and message of a GetModelInvocationJob answer (empty where it has none).
batch_runner::job_status job_status_of(std::string_view body) {
    rapidjson::Document d;
    bgw::util::parse_json(d, body);
    batch_runner::job_status out;
    if (!d.HasParseError() && d.IsObject()) {
        if (auto s = d.FindMember("status"); s != d.MemberEnd() && s->value.IsString())
            out.status = s->value.GetString();
        if (auto m = d.FindMember("message"); m != d.MemberEnd() && m->value.IsString())
            out.message = m->value.GetString();
    }
    return out;
}

}  // namespace

std::int64_t batch_now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

awaitable<void> batch_runner::submit(gateway_context& g, const batch::job& j) {
    std::string input;
    {
        std::lock_guard lock(spool_.mutex());
        input = batch::input_jsonl(spool_.book(), j);
    }
    // Both steps are idempotent: the same key, and the job id as the clientRequestToken.
    aws_request upload{.endpoint = cfg_.s3_endpoints.at(j.region),
                       .region = j.region,
                       .service = "s3",
                       .method = http::verb::put,
                       .path = s3_path(cfg_.batch.bucket, batch::input_key(cfg_.batch, j.id)),
                       .body = std::move(input),
                       .content_type = "application/jsonl"};
    auto put = co_await aws_call(g, std::move(upload));
    aws_reply created;
    if (!put.ec && put.status == 200) {
        aws_request create{.endpoint = cfg_.control_endpoints.at(j.region),
                           .region = j.region,
                           .service = "bedrock",
                           .method = http::verb::post,
                           .path = "/model-invocation-job",
                           .body = batch::create_job_body(cfg_.batch, j),
                           .content_type = "application/json"};
        created = co_await aws_call(g, std::move(create));
    }
    const aws_reply& last = put.ec || put.status != 200 ? put : created;
    std::string arn;
    if (!last.ec && last.status == 200) {
        rapidjson::Document d;
        bgw::util::parse_json(d, created.body);
        if (!d.HasParseError() && d.IsObject() && d.HasMember("jobArn") && d["jobArn"].IsString())
            arn = d["jobArn"].GetString();
    }
    std::lock_guard lock(spool_.mutex());
    if (!arn.empty()) {
        if (spool_.append(batch::submitted_event(j.id, arn))) {
            next_poll_[j.id] = {steady::now() + cfg_.batch.poll_interval, cfg_.batch.poll_interval};
            obs::event("batch_job_submitted")
                .str("job", j.id)
                .str("arn", arn)
                .unum("records", j.records.size())
                .info();
        }
        co_return;
    }
    if (worth_retrying(last) || (!last.ec && last.status == 200)) {
        obs::event("batch_job_submit_retry").str("job", j.id).str("error", describe(last)).warn();
        retry_at_[j.id] = steady::now() + cfg_.batch.poll_interval;
        co_return;
    }
    // Refused for good (a bad role, model or bucket): every record fails with the reason.
    const std::string why = "batch job refused: " + describe(last) + ": " + message_of(last.body);
    obs::event("batch_job_refused").str("job", j.id).str("error", describe(last)).warn();
    for (const auto& id : j.records)
        spool_.append(batch::result_event(id, "", error_json(last.status, why)));
    spool_.append(batch::finished_event(j.id, "Failed"));
}

void batch_runner::poll_later(const batch::job& j) {
    std::lock_guard lock(spool_.mutex());
    auto& [at, interval] = next_poll_[j.id];
    if (interval.count() == 0) interval = cfg_.batch.poll_interval;
    interval = std::min(interval * 2, cfg_.batch.poll_interval * 32);  // backoff
    at = steady::now() + interval;
}

awaitable<void> batch_runner::poll(gateway_context& g, const batch::job& j) {
    aws_request describe_job{.endpoint = cfg_.control_endpoints.at(j.region),
                             .region = j.region,
                             .service = "bedrock",
                             .method = http::verb::get,
                             .path = "/model-invocation-job/" + routing::encode_label(j.arn)};
    auto got = co_await aws_call(g, std::move(describe_job));
    if (got.ec || got.status != 200) {
        obs::event("batch_job_poll_failed").str("job", j.id).str("error", describe(got)).warn();
        poll_later(j);
        co_return;
    }
    const auto status = job_status_of(got.body);
    if (status.status != j.status && !status.status.empty()) {
        std::lock_guard lock(spool_.mutex());
        spool_.append(batch::status_event(j.id, status.status));
    }
    if (!batch::is_terminal_status(status.status)) {
        poll_later(j);
        co_return;
    }
    std::vector<batch::output_line> lines;
    if (batch::has_output(status.status)) {
        aws_request output{
            .endpoint = cfg_.s3_endpoints.at(j.region),
            .region = j.region,
            .service = "s3",
            .method = http::verb::get,
            .path = s3_path(cfg_.batch.bucket, batch::output_key(cfg_.batch, j.id, j.arn))};
        auto out = co_await aws_call(g, std::move(output));
        if (out.ec || out.status != 200) {
            obs::event("batch_output_read_failed")
                .str("job", j.id)
                .str("error", describe(out))
                .warn();
            poll_later(j);
            co_return;
        }
        lines = batch::parse_output(out.body);
    }
    store_results(g, j, status, lines);
}

void batch_runner::store_results(gateway_context& g,
                                 const batch::job& j,
                                 const job_status& status,
                                 const std::vector<batch::output_line>& lines) {
    std::lock_guard lock(spool_.mutex());
    std::size_t failed = 0;
    for (const auto& id : j.records) {
        const auto* r = spool_.book().find_record(id);
        if (!r || r->state != batch::record_state::in_job) continue;  // stored before a crash
        auto line = std::find_if(lines.begin(), lines.end(),
                                 [&](const auto& l) { return l.record_id == id; });
        if (line == lines.end()) {
            ++failed;
            spool_.append(batch::result_event(
                id, "",
                error_json(500, "batch job " + status.status +
                                    (status.message.empty() ? "" : ": " + status.message) +
                                    "; no output for this record")));
        } else {
            failed += line->error.empty() ? 0 : 1;
            if (line->error.empty()) count_usage(g, *r, line->output, config::tier::batch);
            spool_.append(batch::result_event(id, line->output, line->error));
        }
    }
    spool_.append(batch::finished_event(j.id, status.status));
    next_poll_.erase(j.id);
    obs::event("batch_job_finished")
        .str("job", j.id)
        .str("status", status.status)
        .unum("records", j.records.size())
        .unum("failed", failed)
        .info();
}

awaitable<void> batch_runner::run_on_demand(gateway_context& g, const batch::job& j) {
    const auto op =
        j.operation == "Converse" ? routing::operation::converse : routing::operation::invoke_model;
    const auto path = routing::model_wire_path(op, j.model);
    for (const auto& id : j.records) {
        std::string input;
        {
            std::lock_guard lock(spool_.mutex());
            const auto* r = spool_.book().find_record(id);
            if (!r || r->state != batch::record_state::in_job) continue;
            input = r->input;
        }
        aws_request invoke{.endpoint = cfg_.regions.at(j.region),
                           .region = j.region,
                           .service = "bedrock",
                           .method = http::verb::post,
                           .path = path,
                           .body = std::move(input),
                           .content_type = "application/json"};
        auto got = co_await aws_call(g, std::move(invoke));
        std::lock_guard lock(spool_.mutex());
        if (!got.ec && got.status == 200 && is_json(got.body)) {
            if (const auto* r = spool_.book().find_record(id))
                count_usage(g, *r, got.body, config::tier::on_demand);
            spool_.append(batch::result_event(id, got.body, ""));
        } else if (worth_retrying(got)) {
            retry_at_[j.id] = steady::now() + cfg_.batch.poll_interval;
            co_return;  // the rest of the job waits for the next round
        } else {
            spool_.append(batch::result_event(
                id, "", error_json(got.status ? got.status : 502, message_of(got.body))));
        }
    }
    std::lock_guard lock(spool_.mutex());
    std::size_t failed = 0;
    for (const auto& id : j.records) {
        const auto* r = spool_.book().find_record(id);
        if (r && r->state == batch::record_state::failed) ++failed;
    }
    spool_.append(batch::finished_event(j.id, failed ? "PartiallyCompleted" : "Completed"));
    obs::event("batch_job_finished")
        .str("job", j.id)
        .str("status", "on-demand")
        .unum("records", j.records.size())
        .unum("failed", failed)
        .info();
}

void batch_runner::count_usage(gateway_context& g,
                               const batch::record& r,
                               std::string_view output,
                               config::tier t) {
    if (auto used = policy::usage_from_model_output(output))
        g.count_usage(*g.snapshot(), r.region, t, r.model, r.model, *used);
}

void batch_runner::plan_jobs_locked() {
    for (auto& plan : spool_.book().due(cfg_.batch, batch_now_ms())) {
        batch::job j;
        j.id = new_job_id();
        j.region = std::move(plan.region);
        j.model = std::move(plan.model);
        j.operation = std::move(plan.operation);
        j.records = std::move(plan.records);
        j.on_demand = plan.on_demand;
        j.created_ms = batch_now_ms();
        if (!spool_.append(batch::job_event(j))) break;
        obs::event("batch_job_planned")
            .str("job", j.id)
            .unum("records", j.records.size())
            .boolean("on_demand", j.on_demand)
            .info();
    }
}

std::vector<batch::job> batch_runner::due_jobs_locked(std::chrono::steady_clock::time_point now) {
    std::vector<batch::job> work;
    for (const auto& [id, j] : spool_.book().jobs()) {
        if (j.state == batch::job_state::finished) continue;
        if (auto r = retry_at_.find(id); r != retry_at_.end() && r->second > now) continue;
        if (j.state == batch::job_state::running && !j.on_demand) {
            auto p = next_poll_.find(id);
            if (p != next_poll_.end() && p->second.first > now) continue;
        }
        work.push_back(j);
    }
    return work;
}

awaitable<void> batch_runner::run(gateway_context& g) {
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer timer(ex);
    const auto tick = std::clamp(std::min(cfg_.batch.poll_interval, cfg_.batch.max_wait) / 2,
                                 std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
    for (;;) {
        std::vector<batch::job> work;
        {
            std::lock_guard lock(spool_.mutex());
            plan_jobs_locked();
            work = due_jobs_locked(steady::now());
        }
        for (const auto& j : work) {
            if (j.on_demand) {
                co_await run_on_demand(g, j);
            } else if (j.state == batch::job_state::submitting) {
                co_await submit(g, j);
            } else {
                co_await poll(g, j);
            }
        }
        timer.expires_after(tick);
        co_await timer.async_wait(use_nothrow);
    }
}

}  // namespace bgw::net
