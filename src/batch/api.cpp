// The `/gateway/batch/...` answers over the batch book. A cancel is the only answer that changes
// the book: it comes back as a journal line for the shell to make durable before it answers.

#include "bgw/batch/api.hpp"

#include "bgw/http/error_response.hpp"
#include "bgw/util/json.hpp"

#include <algorithm>
#include <cstdint>

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace bgw::batch {
namespace {

namespace http = boost::beast::http;
using response = http::response<http::string_body>;
using writer = rapidjson::Writer<rapidjson::StringBuffer>;

response json_response(http::status status, std::string body, std::string_view request_id) {
    response res{status, 11};
    res.set(http::field::content_type, "application/json");
    res.set("x-amzn-RequestId", request_id);
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
}

response fail(http::status s,
              std::string_view type,
              std::string message,
              std::string_view request_id) {
    return bgw::http::make_error_response({s, std::string(type), std::move(message)}, request_id);
}

void str(writer& w, const char* k, std::string_view v) {
    w.Key(k);
    w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
}

std::string text(const rapidjson::StringBuffer& b) { return {b.GetString(), b.GetSize()}; }

/// GET `/gateway/batch/jobs`.
response answer_jobs(const book& bk, std::string_view caller, std::string_view request_id) {
    rapidjson::StringBuffer b;
    writer w(b);
    w.StartObject();
    w.Key("jobs");
    w.StartArray();
    for (const auto& [id, j] : bk.jobs()) {
        // With caller keys, a job is listed only if it holds some of the caller's records,
        // and counts only those: other keys' records stay invisible, even as a number.
        std::size_t mine = j.records.size();
        if (!caller.empty()) {
            mine = static_cast<std::size_t>(
                std::count_if(j.records.begin(), j.records.end(), [&](const std::string& rid) {
                    const record* r = bk.find_record(rid);
                    return r && visible_to(*r, caller);
                }));
            if (mine == 0) continue;
        }
        w.StartObject();
        str(w, "jobId", id);
        str(w, "jobArn", j.arn);
        str(w, "region", j.region);
        str(w, "modelId", j.model);
        str(w, "operation", j.operation);
        str(w, "state", job_state_name(j.state));
        str(w, "status", j.status);
        w.Key("records");
        w.Uint64(mine);
        w.Key("onDemand");
        w.Bool(j.on_demand);
        w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    return json_response(http::status::ok, text(b), request_id);
}

/// DELETE of a record `caller` may see: a queued record is cancelled (once its line is
/// durable), a cancelled one stays so, any other is already in a job.
api_answer cancel_record(const record& r, std::string_view request_id) {
    std::optional<journal_write> event;
    if (r.state == record_state::queued) {
        event = journal_write{cancel_event(r.id),
                              {http::status::service_unavailable, "ServiceUnavailableException",
                               "the batch spool cannot be written; the record was not cancelled"}};
    } else if (r.state != record_state::cancelled) {
        return {fail(http::status::conflict, "ConflictException",
                     "record " + r.id + " is already in job " + r.job + "; it cannot be cancelled",
                     request_id),
                std::nullopt};
    }
    rapidjson::StringBuffer b;
    writer w(b);
    w.StartObject();
    str(w, "recordId", r.id);
    str(w, "status", "cancelled");
    w.EndObject();
    return {json_response(http::status::ok, text(b), request_id), std::move(event)};
}

/// A failed record: the status its error object carries (400..599, else 500) and the error.
response failed_record(const record& r, std::string_view request_id) {
    rapidjson::Document e;
    bgw::util::parse_json(e, r.error);
    unsigned code = 500;
    std::string message = "the record failed";
    if (e.IsObject()) {
        if (auto c = e.FindMember("errorCode"); c != e.MemberEnd() && c->value.IsUint() &&
                                                c->value.GetUint() >= 400 &&
                                                c->value.GetUint() <= 599)
            code = c->value.GetUint();
        if (auto m = e.FindMember("errorMessage"); m != e.MemberEnd() && m->value.IsString())
            message = m->value.GetString();
    }
    rapidjson::StringBuffer b;
    writer w(b);
    w.StartObject();
    str(w, "message", message);
    str(w, "recordId", r.id);
    str(w, "status", "failed");
    w.Key("error");
    w.RawValue(r.error.data(), r.error.size(), rapidjson::kObjectType);
    w.EndObject();
    auto res = json_response(static_cast<http::status>(code), text(b), request_id);
    res.set("x-amzn-ErrorType", "BatchRecordFailed");
    return res;
}

/// GET of a record `caller` may see.
response read_record(const book& bk,
                     const config::batch_config& cfg,
                     const record& r,
                     std::string_view request_id) {
    switch (r.state) {
        case record_state::done: {
            // The body InvokeModel / Converse would have answered.
            auto res = json_response(http::status::ok, r.output, request_id);
            res.set("X-Gateway-Tier", "batch");
            res.set("X-Gateway-Region", r.region);
            return res;
        }
        case record_state::cancelled:
            return fail(http::status::gone, "ResourceNotFoundException",
                        "record " + r.id + " was cancelled", request_id);
        case record_state::failed:
            return failed_record(r, request_id);
        case record_state::queued:
        case record_state::in_job:
            break;
    }
    rapidjson::StringBuffer b;
    writer w(b);
    w.StartObject();
    str(w, "recordId", r.id);
    str(w, "status", record_state_name(r.state));
    if (!r.job.empty()) {
        str(w, "jobId", r.job);
        if (const auto* j = bk.find_job(r.job); j && !j->status.empty())
            str(w, "jobStatus", j->status);
    }
    w.EndObject();
    auto res = json_response(http::status::accepted, text(b), request_id);
    res.set(http::field::retry_after,
            std::to_string(std::max<std::int64_t>(1, cfg.poll_interval.count() / 1000)));
    return res;
}

}  // namespace

api_answer answer(const book& b,
                  const config::batch_config& cfg,
                  http::verb method,
                  std::string_view target,
                  std::string_view caller,
                  std::string_view request_id) {
    target = target.substr(0, target.find('?'));
    if (target == "/gateway/batch/jobs") {
        if (method != http::verb::get)
            return {fail(http::status::method_not_allowed, "ValidationException", "use GET",
                         request_id),
                    std::nullopt};
        return {answer_jobs(b, caller, request_id), std::nullopt};
    }
    constexpr std::string_view records = "/gateway/batch/records/";
    if (!target.starts_with(records) || target.size() == records.size() ||
        target.substr(records.size()).find('/') != std::string_view::npos) {
        return {fail(http::status::not_found, "UnknownOperationException",
                     "no such batch resource: use /gateway/batch/records/{recordId} or "
                     "/gateway/batch/jobs",
                     request_id),
                std::nullopt};
    }
    const std::string id(target.substr(records.size()));
    const record* r = b.find_record(id);
    // Another key's record answers exactly as an unknown one: its existence is not revealed.
    if (!r || !visible_to(*r, caller))
        return {fail(http::status::not_found, "ResourceNotFoundException", "no record " + id,
                     request_id),
                std::nullopt};
    if (method == http::verb::delete_) return cancel_record(*r, request_id);
    if (method != http::verb::get)
        return {fail(http::status::method_not_allowed, "ValidationException", "use GET or DELETE",
                     request_id),
                std::nullopt};
    return {read_record(b, cfg, *r, request_id), std::nullopt};
}

}  // namespace bgw::batch
