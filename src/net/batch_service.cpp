// The batch tier's durable spool and its runner. Every state change is a journal line made
// durable (write + fdatasync) before the in-memory book applies it, so a crash at any point
// replays to a state the outside world has already seen, and nothing accepted is lost.

#include "bgw/net/batch_service.hpp"

#include "bgw/aws/sigv4.hpp"
#include "bgw/batch/api.hpp"
#include "bgw/http/error_response.hpp"
#include "bgw/http/json.hpp"
#include "bgw/net/aws_call.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/obs/log.hpp"
#include "bgw/policy/throttle.hpp"
#include "bgw/policy/traffic.hpp"
#include "bgw/routing/runtime_path.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>
#include <stdexcept>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/http.hpp>
#include <fcntl.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>

namespace bgw::net {
namespace {

namespace http = beast::http;
using steady = std::chrono::steady_clock;

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

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
    bgw::http::parse_json(d, std::string_view(s.data(), s.size()));
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
    bgw::http::parse_json(d, std::string_view(body.data(), body.size()));
    if (d.HasParseError() || !d.IsObject()) return {};
    for (const char* key : {"message", "Message"}) {
        auto it = d.FindMember(key);
        if (it != d.MemberEnd() && it->value.IsString()) return it->value.GetString();
    }
    return {};
}

}  // namespace

batch_service::batch_service(const config::config& cfg) : cfg_(cfg) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(cfg_.batch.spool_dir, ec);
    if (ec) {
        throw std::runtime_error("batch.spool_dir " + cfg_.batch.spool_dir +
                                 ": cannot create: " + ec.message());
    }
    const std::string path = cfg_.batch.spool_dir + "/journal.jsonl";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd_ < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    // Replay every complete line; a torn last line (a crash mid-write) is cut off, so the next
    // append starts on a line of its own.
    std::string text;
    char buf[65536];
    for (;;) {
        auto n = ::pread(fd_, buf, sizeof buf, static_cast<off_t>(text.size()));
        if (n < 0) throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
    }
    std::size_t complete = 0, applied = 0, skipped = 0;
    for (std::size_t at = 0; at < text.size();) {
        auto nl = text.find('\n', at);
        if (nl == std::string::npos) break;
        if (book_.apply(std::string_view(text).substr(at, nl - at))) {
            ++applied;
        } else {
            ++skipped;
        }
        at = complete = nl + 1;
    }
    if (complete < text.size() && ::ftruncate(fd_, static_cast<off_t>(complete)) != 0)
        throw std::runtime_error("cannot repair " + path + ": " + std::strerror(errno));
    obs::event("batch_spool")
        .str("path", path)
        .unum("events", applied)
        .unum("skipped", skipped)
        .unum("queued", book_.queued())
        .unum("jobs", book_.jobs().size())
        .info();
}

batch_service::~batch_service() {
    if (fd_ >= 0) ::close(fd_);
}

bool batch_service::append(const std::string& line) {
    // Caller holds mutex_.
    std::string out = line + "\n";
    std::size_t done = 0;
    while (done < out.size()) {
        auto n = ::write(fd_, out.data() + done, out.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            obs::event("batch_spool_write_failed").str("error", std::strerror(errno)).error();
            return false;
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fdatasync(fd_) != 0) {
        obs::event("batch_spool_sync_failed").str("error", std::strerror(errno)).error();
        return false;
    }
    book_.apply(line);
    return true;
}

result<std::string> batch_service::accept(std::string region,
                                          std::string model,
                                          std::string operation,
                                          std::string input_json,
                                          std::string_view owner) {
    batch::record r;
    r.id = new_request_id();
    r.region = std::move(region);
    r.model = std::move(model);
    r.operation = std::move(operation);
    r.input = std::move(input_json);
    r.accepted_ms = now_ms();
    r.owner = owner;
    std::lock_guard lock(mutex_);
    if (!append(batch::accept_event(r))) {
        return error{http::status::service_unavailable, "ServiceUnavailableException",
                     "the batch spool cannot be written; the record was not accepted"};
    }
    return r.id;
}

http::response<http::string_body> batch_service::answer(http::verb method,
                                                        std::string_view target,
                                                        std::string_view caller,
                                                        std::string_view request_id) {
    std::lock_guard lock(mutex_);
    auto a = batch::answer(book_, cfg_.batch, method, target, caller, request_id);
    if (a.event && !append(a.event->line))
        return bgw::http::make_error_response(a.event->unwritten, request_id);
    return std::move(a.response);
}

awaitable<void> batch_service::submit(gateway_context& g, const batch::job& j) {
    std::string input;
    {
        std::lock_guard lock(mutex_);
        input = batch::input_jsonl(book_, j);
    }
    // Both steps are idempotent: the same key, and the job id as the clientRequestToken.
    auto put = co_await aws_call(g, cfg_.s3_endpoints.at(j.region), j.region, "s3", http::verb::put,
                                 s3_path(cfg_.batch.bucket, batch::input_key(cfg_.batch, j.id)),
                                 std::move(input), "application/jsonl");
    aws_reply created;
    if (!put.ec && put.status == 200) {
        created = co_await aws_call(g, cfg_.control_endpoints.at(j.region), j.region, "bedrock",
                                    http::verb::post, "/model-invocation-job",
                                    batch::create_job_body(cfg_.batch, j), "application/json");
    }
    const aws_reply& last = put.ec || put.status != 200 ? put : created;
    std::string arn;
    if (!last.ec && last.status == 200) {
        rapidjson::Document d;
        bgw::http::parse_json(d, created.body);
        if (!d.HasParseError() && d.IsObject() && d.HasMember("jobArn") && d["jobArn"].IsString())
            arn = d["jobArn"].GetString();
    }
    std::lock_guard lock(mutex_);
    if (!arn.empty()) {
        if (append(batch::submitted_event(j.id, arn))) {
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
        append(batch::result_event(id, "", error_json(last.status, why)));
    append(batch::finished_event(j.id, "Failed"));
}

awaitable<void> batch_service::poll(gateway_context& g, const batch::job& j) {
    auto got = co_await aws_call(g, cfg_.control_endpoints.at(j.region), j.region, "bedrock",
                                 http::verb::get,
                                 "/model-invocation-job/" + routing::encode_label(j.arn), {}, {});
    auto later = [&] {
        std::lock_guard lock(mutex_);
        auto& [at, interval] = next_poll_[j.id];
        if (interval.count() == 0) interval = cfg_.batch.poll_interval;
        interval = std::min(interval * 2, cfg_.batch.poll_interval * 32);  // backoff
        at = steady::now() + interval;
    };
    if (got.ec || got.status != 200) {
        obs::event("batch_job_poll_failed").str("job", j.id).str("error", describe(got)).warn();
        later();
        co_return;
    }
    rapidjson::Document d;
    bgw::http::parse_json(d, got.body);
    std::string status, message;
    if (!d.HasParseError() && d.IsObject()) {
        if (auto s = d.FindMember("status"); s != d.MemberEnd() && s->value.IsString())
            status = s->value.GetString();
        if (auto m = d.FindMember("message"); m != d.MemberEnd() && m->value.IsString())
            message = m->value.GetString();
    }
    if (status != j.status && !status.empty()) {
        std::lock_guard lock(mutex_);
        append(batch::status_event(j.id, status));
    }
    if (!batch::is_terminal_status(status)) {
        later();
        co_return;
    }
    std::vector<batch::output_line> lines;
    if (batch::has_output(status)) {
        auto out = co_await aws_call(
            g, cfg_.s3_endpoints.at(j.region), j.region, "s3", http::verb::get,
            s3_path(cfg_.batch.bucket, batch::output_key(cfg_.batch, j.id, j.arn)), {}, {});
        if (out.ec || out.status != 200) {
            obs::event("batch_output_read_failed")
                .str("job", j.id)
                .str("error", describe(out))
                .warn();
            later();
            co_return;
        }
        lines = batch::parse_output(out.body);
    }
    std::lock_guard lock(mutex_);
    std::size_t failed = 0;
    for (const auto& id : j.records) {
        const auto* r = book_.find_record(id);
        if (!r || r->state != batch::record_state::in_job) continue;  // stored before a crash
        auto line = std::find_if(lines.begin(), lines.end(),
                                 [&](const auto& l) { return l.record_id == id; });
        if (line == lines.end()) {
            ++failed;
            append(batch::result_event(
                id, "",
                error_json(500, "batch job " + status + (message.empty() ? "" : ": " + message) +
                                    "; no output for this record")));
        } else {
            failed += line->error.empty() ? 0 : 1;
            if (line->error.empty()) count_usage(g, *r, line->output, config::tier::batch);
            append(batch::result_event(id, line->output, line->error));
        }
    }
    append(batch::finished_event(j.id, status));
    next_poll_.erase(j.id);
    obs::event("batch_job_finished")
        .str("job", j.id)
        .str("status", status)
        .unum("records", j.records.size())
        .unum("failed", failed)
        .info();
}

awaitable<void> batch_service::run_on_demand(gateway_context& g, const batch::job& j) {
    const auto op =
        j.operation == "Converse" ? routing::operation::converse : routing::operation::invoke_model;
    const auto path = routing::model_wire_path(op, j.model);
    for (const auto& id : j.records) {
        std::string input;
        {
            std::lock_guard lock(mutex_);
            const auto* r = book_.find_record(id);
            if (!r || r->state != batch::record_state::in_job) continue;
            input = r->input;
        }
        auto got = co_await aws_call(g, cfg_.regions.at(j.region), j.region, "bedrock",
                                     http::verb::post, path, std::move(input), "application/json");
        std::lock_guard lock(mutex_);
        if (!got.ec && got.status == 200 && is_json(got.body)) {
            if (const auto* r = book_.find_record(id))
                count_usage(g, *r, got.body, config::tier::on_demand);
            append(batch::result_event(id, got.body, ""));
        } else if (worth_retrying(got)) {
            retry_at_[j.id] = steady::now() + cfg_.batch.poll_interval;
            co_return;  // the rest of the job waits for the next round
        } else {
            append(batch::result_event(
                id, "", error_json(got.status ? got.status : 502, message_of(got.body))));
        }
    }
    std::lock_guard lock(mutex_);
    std::size_t failed = 0;
    for (const auto& id : j.records) {
        const auto* r = book_.find_record(id);
        if (r && r->state == batch::record_state::failed) ++failed;
    }
    append(batch::finished_event(j.id, failed ? "PartiallyCompleted" : "Completed"));
    obs::event("batch_job_finished")
        .str("job", j.id)
        .str("status", "on-demand")
        .unum("records", j.records.size())
        .unum("failed", failed)
        .info();
}

void batch_service::count_usage(gateway_context& g,
                                const batch::record& r,
                                std::string_view output,
                                config::tier t) {
    if (auto used = policy::usage_from_model_output(output))
        g.count_usage(*g.snapshot(), r.region, t, r.model, r.model, *used);
}

std::map<std::string, std::uint64_t> batch_service::record_counts() {
    std::lock_guard lock(mutex_);
    std::map<std::string, std::uint64_t> out;
    for (const auto& [state, n] : book_.count_by_state())
        out.emplace(batch::record_state_name(state), n);
    return out;
}

awaitable<void> batch_service::run(gateway_context& g) {
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer timer(ex);
    const auto tick = std::clamp(std::min(cfg_.batch.poll_interval, cfg_.batch.max_wait) / 2,
                                 std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
    for (;;) {
        std::vector<batch::job> work;
        {
            std::lock_guard lock(mutex_);
            // New jobs: each one's line is durable before anything is sent for it.
            for (auto& plan : book_.due(cfg_.batch, now_ms())) {
                batch::job j;
                j.id = new_job_id();
                j.region = std::move(plan.region);
                j.model = std::move(plan.model);
                j.operation = std::move(plan.operation);
                j.records = std::move(plan.records);
                j.on_demand = plan.on_demand;
                j.created_ms = now_ms();
                if (!append(batch::job_event(j))) break;
                obs::event("batch_job_planned")
                    .str("job", j.id)
                    .unum("records", j.records.size())
                    .boolean("on_demand", j.on_demand)
                    .info();
            }
            const auto now = steady::now();
            for (const auto& [id, j] : book_.jobs()) {
                if (j.state == batch::job_state::finished) continue;
                if (auto r = retry_at_.find(id); r != retry_at_.end() && r->second > now) continue;
                if (j.state == batch::job_state::running && !j.on_demand) {
                    auto p = next_poll_.find(id);
                    if (p != next_poll_.end() && p->second.first > now) continue;
                }
                work.push_back(j);
            }
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
