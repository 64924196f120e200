#include "bgw/batch/book.hpp"

#include "bgw/util/json.hpp"

#include <algorithm>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace bgw::batch {
namespace {

using writer = rapidjson::Writer<rapidjson::StringBuffer>;

void str(writer& w, const char* key, std::string_view v) {
    w.Key(key);
    w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
}

void raw(writer& w, const char* key, std::string_view json) {
    w.Key(key);
    w.RawValue(json.data(), json.size(), rapidjson::kObjectType);
}

std::string done(const rapidjson::StringBuffer& b) { return {b.GetString(), b.GetSize()}; }

std::string serialize(const rapidjson::Value& v) {
    rapidjson::StringBuffer b;
    writer w(b);
    v.Accept(w);
    return done(b);
}

std::string get(const rapidjson::Value& v, const char* key) {
    auto it = v.FindMember(key);
    if (it == v.MemberEnd() || !it->value.IsString()) return {};
    return {it->value.GetString(), it->value.GetStringLength()};
}

/// What an `accept` and a `job` line share: the (region, model, operation) group.
template <class RecordOrJob>
void read_group(const rapidjson::Value& d, RecordOrJob& into) {
    into.region = get(d, "region");
    into.model = get(d, "model");
    into.operation = get(d, "op");
}

std::string job_id_of(std::string_view arn) {
    auto slash = arn.rfind('/');
    return std::string(slash == std::string_view::npos ? arn : arn.substr(slash + 1));
}

std::string with_prefix(const config::batch_config& cfg, std::string_view rest) {
    return cfg.prefix.empty() ? std::string(rest) : cfg.prefix + "/" + std::string(rest);
}

}  // namespace

std::string_view record_state_name(record_state s) {
    switch (s) {
        case record_state::queued:
            return "queued";
        case record_state::in_job:
            return "submitted";
        case record_state::done:
            return "done";
        case record_state::failed:
            return "failed";
        case record_state::cancelled:
            return "cancelled";
    }
    return "queued";
}

std::string_view job_state_name(job_state s) {
    switch (s) {
        case job_state::submitting:
            return "submitting";
        case job_state::running:
            return "running";
        case job_state::finished:
            return "finished";
    }
    return "submitting";
}

bool visible_to(const record& r, std::string_view caller) {
    // Keys off: no caller has a name, and every record is everyone's, as before keys existed.
    return caller.empty() || r.owner == caller;
}

std::string accept_event(const record& r) {
    rapidjson::StringBuffer b;
    writer w(b);
    w.StartObject();
    str(w, "e", "accept");
    str(w, "id", r.id);
    str(w, "region", r.region);
    str(w, "model", r.model);
    str(w, "op", r.operation);
    w.Key("t");
    w.Int64(r.accepted_ms);
    raw(w, "input", r.input);
    if (!r.owner.empty()) str(w, "owner", r.owner);
    w.EndObject();
    return done(b);
}

std::string cancel_event(std::string_view record_id) {
    rapidjson::StringBuffer b;
    writer w(b);
    w.StartObject();
    str(w, "e", "cancel");
    str(w, "id", record_id);
    w.EndObject();
    return done(b);
}

std::string job_event(const job& j) {
    rapidjson::StringBuffer b;
    writer w(b);
    w.StartObject();
    str(w, "e", "job");
    str(w, "job", j.id);
    str(w, "region", j.region);
    str(w, "model", j.model);
    str(w, "op", j.operation);
    w.Key("t");
    w.Int64(j.created_ms);
    w.Key("on_demand");
    w.Bool(j.on_demand);
    w.Key("records");
    w.StartArray();
    for (const auto& id : j.records)
        w.String(id.data(), static_cast<rapidjson::SizeType>(id.size()));
    w.EndArray();
    w.EndObject();
    return done(b);
}

std::string submitted_event(std::string_view job_id, std::string_view arn) {
    rapidjson::StringBuffer b;
    writer w(b);
    w.StartObject();
    str(w, "e", "submitted");
    str(w, "job", job_id);
    str(w, "arn", arn);
    w.EndObject();
    return done(b);
}

std::string status_event(std::string_view job_id, std::string_view status) {
    rapidjson::StringBuffer b;
    writer w(b);
    w.StartObject();
    str(w, "e", "status");
    str(w, "job", job_id);
    str(w, "status", status);
    w.EndObject();
    return done(b);
}

std::string result_event(std::string_view record_id,
                         std::string_view output_json,
                         std::string_view error_json) {
    rapidjson::StringBuffer b;
    writer w(b);
    w.StartObject();
    str(w, "e", "result");
    str(w, "id", record_id);
    if (!error_json.empty()) {
        raw(w, "error", error_json);
    } else {
        raw(w, "output", output_json);
    }
    w.EndObject();
    return done(b);
}

std::string finished_event(std::string_view job_id, std::string_view status) {
    rapidjson::StringBuffer b;
    writer w(b);
    w.StartObject();
    str(w, "e", "finished");
    str(w, "job", job_id);
    str(w, "status", status);
    w.EndObject();
    return done(b);
}

std::map<record_state, std::uint64_t> book::count_by_state() const {
    std::map<record_state, std::uint64_t> out;
    for (const auto& [id, r] : records_) ++out[r.state];
    return out;
}

bool book::apply(std::string_view line) {
    rapidjson::Document d;
    bgw::util::parse_json(d, std::string_view(line.data(), line.size()));
    if (d.HasParseError() || !d.IsObject()) return false;
    const std::string e = get(d, "e");
    if (e == "accept") return apply_accept(d);
    if (e == "cancel") return apply_cancel(d);
    if (e == "job") return apply_job(d);
    if (e == "submitted" || e == "status" || e == "finished") return apply_job_update(d, e);
    if (e == "result") return apply_result(d);
    return false;
}

bool book::apply_accept(const rapidjson::Value& d) {
    record r;
    r.id = get(d, "id");
    read_group(d, r);
    r.owner = get(d, "owner");  // absent in lines from before owners: owned by nobody
    auto t = d.FindMember("t");
    auto in = d.FindMember("input");
    if (r.id.empty() || t == d.MemberEnd() || !t->value.IsInt64() || in == d.MemberEnd() ||
        records_.contains(r.id))
        return false;
    r.accepted_ms = t->value.GetInt64();
    r.input = serialize(in->value);
    queue_.push_back(r.id);
    records_.emplace(r.id, std::move(r));
    return true;
}

bool book::apply_cancel(const rapidjson::Value& d) {
    auto it = records_.find(get(d, "id"));
    if (it == records_.end() || it->second.state != record_state::queued) return false;
    it->second.state = record_state::cancelled;
    std::erase(queue_, it->first);
    return true;
}

bool book::apply_job(const rapidjson::Value& d) {
    job j;
    j.id = get(d, "job");
    read_group(d, j);
    auto t = d.FindMember("t");
    auto recs = d.FindMember("records");
    auto od = d.FindMember("on_demand");
    if (j.id.empty() || jobs_.contains(j.id) || t == d.MemberEnd() || !t->value.IsInt64() ||
        recs == d.MemberEnd() || !recs->value.IsArray())
        return false;
    j.created_ms = t->value.GetInt64();
    j.on_demand = od != d.MemberEnd() && od->value.IsBool() && od->value.GetBool();
    for (const auto& v : recs->value.GetArray()) {
        if (!v.IsString()) return false;
        auto it = records_.find(std::string_view(v.GetString(), v.GetStringLength()));
        // Only queued records can join a job: none is ever in two.
        if (it == records_.end() || it->second.state != record_state::queued) return false;
        j.records.emplace_back(v.GetString(), v.GetStringLength());
    }
    for (const auto& id : j.records) {
        auto& r = records_.find(id)->second;
        r.state = record_state::in_job;
        r.job = j.id;
        std::erase(queue_, id);
    }
    jobs_.emplace(j.id, std::move(j));
    return true;
}

/// `submitted`, `status` and `finished`: what Bedrock said about a job.
bool book::apply_job_update(const rapidjson::Value& d, std::string_view event) {
    auto it = jobs_.find(get(d, "job"));
    if (it == jobs_.end()) return false;
    if (event == "submitted") {
        it->second.arn = get(d, "arn");
        if (it->second.state == job_state::submitting) it->second.state = job_state::running;
    } else {
        it->second.status = get(d, "status");
        if (event == "finished") it->second.state = job_state::finished;
    }
    return true;
}

bool book::apply_result(const rapidjson::Value& d) {
    auto it = records_.find(get(d, "id"));
    if (it == records_.end() || it->second.state != record_state::in_job) return false;
    if (auto err = d.FindMember("error"); err != d.MemberEnd()) {
        it->second.state = record_state::failed;
        it->second.error = serialize(err->value);
    } else if (auto out = d.FindMember("output"); out != d.MemberEnd()) {
        it->second.state = record_state::done;
        it->second.output = serialize(out->value);
    } else {
        return false;
    }
    return true;
}

const record* book::find_record(std::string_view id) const {
    auto it = records_.find(id);
    return it == records_.end() ? nullptr : &it->second;
}

const job* book::find_job(std::string_view id) const {
    auto it = jobs_.find(id);
    return it == jobs_.end() ? nullptr : &it->second;
}

std::vector<job_plan> book::due(const config::batch_config& cfg, std::int64_t now_ms) const {
    // Groups in the order their first record arrived.
    std::vector<job_plan> groups;
    std::vector<std::int64_t> oldest;
    for (const auto& id : queue_) {
        const record& r = records_.find(id)->second;
        auto g = std::find_if(groups.begin(), groups.end(), [&](const job_plan& p) {
            return p.region == r.region && p.model == r.model && p.operation == r.operation;
        });
        if (g == groups.end()) {
            groups.push_back({r.region, r.model, r.operation, {}, false});
            oldest.push_back(r.accepted_ms);
            g = groups.end() - 1;
        }
        g->records.push_back(id);
    }
    std::vector<job_plan> out;
    for (std::size_t i = 0; i < groups.size(); ++i) {
        auto& g = groups[i];
        std::size_t at = 0;
        while (g.records.size() - at >= cfg.min_records) {
            const std::size_t n = std::min(max_records_per_job, g.records.size() - at);
            out.push_back({g.region,
                           g.model,
                           g.operation,
                           {g.records.begin() + static_cast<std::ptrdiff_t>(at),
                            g.records.begin() + static_cast<std::ptrdiff_t>(at + n)},
                           false});
            at += n;
        }
        if (at > 0 || g.records.empty()) continue;
        if (cfg.underfull_on_demand && now_ms - oldest[i] >= cfg.max_wait.count()) {
            g.on_demand = true;
            out.push_back(std::move(g));
        }
    }
    return out;
}

std::optional<std::int64_t> book::next_deadline(const config::batch_config& cfg) const {
    if (queue_.empty()) return std::nullopt;
    return records_.find(queue_.front())->second.accepted_ms + cfg.max_wait.count();
}

std::string input_key(const config::batch_config& cfg, std::string_view job_id) {
    return with_prefix(cfg, "input/" + std::string(job_id) + ".jsonl");
}

std::string output_folder(const config::batch_config& cfg) { return with_prefix(cfg, "output/"); }

std::string output_key(const config::batch_config& cfg,
                       std::string_view job_id,
                       std::string_view job_arn) {
    return output_folder(cfg) + job_id_of(job_arn) + "/" + std::string(job_id) + ".jsonl.out";
}

std::string input_jsonl(const book& b, const job& j) {
    std::string out;
    for (const auto& id : j.records) {
        const record* r = b.find_record(id);
        if (!r) continue;
        rapidjson::StringBuffer buf;
        writer w(buf);
        w.StartObject();
        str(w, "recordId", r->id);
        raw(w, "modelInput", r->input);
        w.EndObject();
        out.append(buf.GetString(), buf.GetSize());
        out.push_back('\n');
    }
    return out;
}

std::string create_job_body(const config::batch_config& cfg, const job& j) {
    rapidjson::StringBuffer b;
    writer w(b);
    w.StartObject();
    str(w, "jobName", j.id);
    str(w, "clientRequestToken", j.id);
    str(w, "roleArn", cfg.role_arn);
    str(w, "modelId", j.model);
    w.Key("inputDataConfig");
    w.StartObject();
    w.Key("s3InputDataConfig");
    w.StartObject();
    str(w, "s3InputFormat", "JSONL");
    str(w, "s3Uri", "s3://" + cfg.bucket + "/" + input_key(cfg, j.id));
    w.EndObject();
    w.EndObject();
    w.Key("outputDataConfig");
    w.StartObject();
    w.Key("s3OutputDataConfig");
    w.StartObject();
    str(w, "s3Uri", "s3://" + cfg.bucket + "/" + output_folder(cfg));
    w.EndObject();
    w.EndObject();
    if (j.operation == "Converse") str(w, "modelInvocationType", "Converse");
    w.EndObject();
    return done(b);
}

std::vector<output_line> parse_output(std::string_view jsonl) {
    std::vector<output_line> out;
    while (!jsonl.empty()) {
        auto nl = jsonl.find('\n');
        auto line = jsonl.substr(0, nl);
        jsonl.remove_prefix(nl == std::string_view::npos ? jsonl.size() : nl + 1);
        rapidjson::Document d;
        bgw::util::parse_json(d, std::string_view(line.data(), line.size()));
        if (d.HasParseError() || !d.IsObject()) continue;
        output_line o;
        o.record_id = get(d, "recordId");
        if (o.record_id.empty()) continue;
        if (auto e = d.FindMember("error"); e != d.MemberEnd() && e->value.IsObject()) {
            o.error = serialize(e->value);
        } else if (auto m = d.FindMember("modelOutput"); m != d.MemberEnd()) {
            o.output = serialize(m->value);
        } else {
            o.error = R"({"errorMessage":"the job's output has no modelOutput for this record"})";
        }
        out.push_back(std::move(o));
    }
    return out;
}

bool is_terminal_status(std::string_view status) {
    return status == "Completed" || status == "PartiallyCompleted" || status == "Failed" ||
           status == "Stopped" || status == "Expired";
}

bool has_output(std::string_view status) {
    return status == "Completed" || status == "PartiallyCompleted";
}

}  // namespace bgw::batch
