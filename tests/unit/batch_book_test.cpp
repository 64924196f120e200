// The batch tier's book (issue 6): journal events applied and replayed, grouping into jobs by
// size and deadline, the underfull policies, and what goes to and comes from Bedrock.

#include "bgw/batch/book.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace {

using namespace bgw::batch;

bgw::config::batch_config cfg(std::size_t min_records, std::int64_t max_wait_ms, bool on_demand) {
    bgw::config::batch_config c;
    c.enabled = true;
    c.bucket = "bucket";
    c.prefix = "gw";
    c.role_arn = "arn:aws:iam::123456789012:role/batch";
    c.spool_dir = "/tmp/x";
    c.min_records = min_records;
    c.max_wait = std::chrono::milliseconds(max_wait_ms);
    c.underfull_on_demand = on_demand;
    return c;
}

record rec(std::string id, std::string model, std::int64_t t, std::string op = "InvokeModel") {
    record r;
    r.id = std::move(id);
    r.region = "us-east-1";
    r.model = std::move(model);
    r.operation = std::move(op);
    r.input = R"({"prompt":"hi"})";
    r.accepted_ms = t;
    return r;
}

job make_job(std::string id, const job_plan& p, std::int64_t t) {
    job j;
    j.id = std::move(id);
    j.region = p.region;
    j.model = p.model;
    j.operation = p.operation;
    j.records = p.records;
    j.on_demand = p.on_demand;
    j.created_ms = t;
    return j;
}

TEST(batch_book, groups_full_jobs_per_model_and_operation_in_acceptance_order) {
    book b;
    const auto c = cfg(2, 60'000, false);
    ASSERT_TRUE(b.apply(accept_event(rec("r1", "a", 1))));
    ASSERT_TRUE(b.apply(accept_event(rec("r2", "b", 2))));
    EXPECT_TRUE(b.due(c, 3).empty());  // one record each: below min_records
    ASSERT_TRUE(b.apply(accept_event(rec("r3", "a", 3))));
    ASSERT_TRUE(b.apply(accept_event(rec("r4", "a", 4, "Converse"))));
    ASSERT_TRUE(b.apply(accept_event(rec("r5", "a", 5))));
    auto due = b.due(c, 6);
    ASSERT_EQ(due.size(), 1u);
    EXPECT_EQ(due[0].model, "a");
    EXPECT_EQ(due[0].operation, "InvokeModel");
    // Every queued record of the group goes (a job takes up to max_records_per_job).
    EXPECT_EQ(due[0].records, (std::vector<std::string>{"r1", "r3", "r5"}));
    EXPECT_FALSE(due[0].on_demand);
}

TEST(batch_book, underfull_groups_wait_or_run_on_demand_at_the_deadline) {
    for (bool on_demand : {false, true}) {
        book b;
        const auto c = cfg(100, 1000, on_demand);
        ASSERT_TRUE(b.apply(accept_event(rec("r1", "a", 0))));
        ASSERT_TRUE(b.apply(accept_event(rec("r2", "a", 500))));
        EXPECT_EQ(b.next_deadline(c), 1000);
        EXPECT_TRUE(b.due(c, 999).empty());
        auto due = b.due(c, 1000);
        if (!on_demand) {
            EXPECT_TRUE(due.empty());
        } else {
            ASSERT_EQ(due.size(), 1u);
            EXPECT_TRUE(due[0].on_demand);
            EXPECT_EQ(due[0].records.size(), 2u);
        }
    }
}

TEST(batch_book, a_record_joins_one_job_only_and_replay_rebuilds_the_same_book) {
    book b;
    const auto c = cfg(2, 60'000, false);
    std::vector<std::string> journal;
    auto log = [&](std::string line) {
        ASSERT_TRUE(b.apply(line)) << line;
        journal.push_back(std::move(line));
    };
    log(accept_event(rec("r1", "a", 1)));
    log(accept_event(rec("r2", "a", 2)));
    log(accept_event(rec("r3", "a", 3)));
    log(cancel_event("r3"));
    auto due = b.due(c, 4);
    ASSERT_EQ(due.size(), 1u);
    auto j = make_job("job1", due[0], 4);
    log(job_event(j));
    EXPECT_TRUE(b.due(c, 5).empty());
    EXPECT_EQ(b.queued(), 0u);
    // The same records in a second job: refused, so no record is ever submitted twice.
    auto twice = j;
    twice.id = "job2";
    EXPECT_FALSE(b.apply(job_event(twice)));
    log(submitted_event("job1", "arn:aws:bedrock:us-east-1:1:model-invocation-job/abc"));
    log(status_event("job1", "InProgress"));
    log(result_event("r1", R"({"text":"one"})", ""));
    log(result_event("r2", "", R"({"errorCode":400,"errorMessage":"bad"})"));
    log(finished_event("job1", "PartiallyCompleted"));

    book replayed;
    for (const auto& line : journal) ASSERT_TRUE(replayed.apply(line));
    // A torn last line (a crash mid-write) is ignored, not fatal.
    EXPECT_FALSE(replayed.apply(R"({"e":"accept","id":"r9","regi)"));
    for (const book* x : {&b, &replayed}) {
        EXPECT_EQ(x->find_record("r1")->state, record_state::done);
        EXPECT_EQ(x->find_record("r1")->output, R"({"text":"one"})");
        EXPECT_EQ(x->find_record("r2")->state, record_state::failed);
        EXPECT_EQ(x->find_record("r3")->state, record_state::cancelled);
        EXPECT_EQ(x->find_job("job1")->state, job_state::finished);
        EXPECT_EQ(x->find_job("job1")->status, "PartiallyCompleted");
        EXPECT_EQ(x->find_job("job1")->arn, "arn:aws:bedrock:us-east-1:1:model-invocation-job/abc");
        EXPECT_EQ(x->find_record("r9"), nullptr);
    }
}

TEST(batch_book, only_queued_records_can_be_cancelled_or_given_results_once) {
    book b;
    ASSERT_TRUE(b.apply(accept_event(rec("r1", "a", 1))));
    EXPECT_FALSE(b.apply(accept_event(rec("r1", "a", 2))));  // same id twice
    EXPECT_FALSE(b.apply(result_event("r1", "{}", "")));     // not in a job yet
    job_plan p{"us-east-1", "a", "InvokeModel", {"r1"}, false};
    ASSERT_TRUE(b.apply(job_event(make_job("j", p, 3))));
    EXPECT_FALSE(b.apply(cancel_event("r1")));  // already submitted
    ASSERT_TRUE(b.apply(result_event("r1", "{}", "")));
    EXPECT_FALSE(b.apply(result_event("r1", "{}", "")));  // a result is stored once
}

TEST(batch_book, lines_that_are_not_known_events_change_nothing) {
    book b;
    EXPECT_FALSE(b.apply(R"({"e":"frobnicate","id":"r1"})"));
    EXPECT_FALSE(b.apply(R"(["accept"])"));
    EXPECT_FALSE(b.apply(R"({"id":"r1"})"));  // no event name
    // Updates about a job the book never saw.
    EXPECT_FALSE(b.apply(submitted_event("nojob", "arn:aws:bedrock:us-east-1:1:x/abc")));
    EXPECT_FALSE(b.apply(status_event("nojob", "InProgress")));
    EXPECT_FALSE(b.apply(finished_event("nojob", "Completed")));
    // A result with neither output nor error.
    ASSERT_TRUE(b.apply(accept_event(rec("r1", "a", 1))));
    job_plan p{"us-east-1", "a", "InvokeModel", {"r1"}, false};
    ASSERT_TRUE(b.apply(job_event(make_job("j", p, 2))));
    EXPECT_FALSE(b.apply(R"({"e":"result","id":"r1"})"));
    EXPECT_EQ(b.find_record("r1")->state, record_state::in_job);
    EXPECT_TRUE(b.jobs().contains("j"));
    EXPECT_EQ(b.jobs().size(), 1u);
}

TEST(batch_book, a_record_keeps_its_owner_through_the_journal_and_old_lines_have_none) {
    book b;
    auto owned = rec("r1", "a", 1);
    owned.owner = "billing-app";
    const auto line = accept_event(owned);
    ASSERT_TRUE(b.apply(line));
    EXPECT_EQ(b.find_record("r1")->owner, "billing-app");
    // Without keys the line is the same as before owners existed: no "owner" member at all.
    EXPECT_EQ(accept_event(rec("r2", "a", 2)).find("owner"), std::string::npos);
    // A line written before owners existed still loads, owned by nobody.
    ASSERT_TRUE(
        b.apply(R"({"e":"accept","id":"old","region":"us-east-1","model":"a","op":"InvokeModel",)"
                R"("t":3,"input":{"prompt":"hi"}})"));
    EXPECT_EQ(b.find_record("old")->owner, "");
    EXPECT_EQ(b.queued(), 2u);
}

TEST(batch_book, only_the_owner_sees_a_record_when_caller_keys_are_on) {
    struct case_ {
        std::string_view owner;
        std::string_view caller;  ///< empty: the gateway has no caller keys
        bool visible;
    };
    const case_ cases[] = {
        {"", "", true},           // keys off, as before
        {"app", "", true},        // spooled under keys, read after they were removed
        {"app", "app", true},     // the key that spooled it
        {"app", "other", false},  // another key
        {"app", "App", false},    // names are exact
        {"", "app", false},       // unowned (legacy, or spooled with keys off): no key's
    };
    for (const auto& c : cases) {
        auto r = rec("r", "a", 1);
        r.owner = c.owner;
        EXPECT_EQ(visible_to(r, c.caller), c.visible) << c.owner << " / " << c.caller;
    }
}

TEST(batch_book, job_files_and_create_request) {
    book b;
    const auto c = cfg(1, 1000, false);
    ASSERT_TRUE(b.apply(accept_event(rec("r1", "m", 1, "Converse"))));
    auto due = b.due(c, 2);
    ASSERT_EQ(due.size(), 1u);
    auto j = make_job("bgw-1", due[0], 2);
    ASSERT_TRUE(b.apply(job_event(j)));
    EXPECT_EQ(input_key(c, "bgw-1"), "gw/input/bgw-1.jsonl");
    EXPECT_EQ(output_key(c, "bgw-1", "arn:aws:bedrock:us-east-1:1:model-invocation-job/xyz"),
              "gw/output/xyz/bgw-1.jsonl.out");
    EXPECT_EQ(input_jsonl(b, *b.find_job("bgw-1")),
              "{\"recordId\":\"r1\",\"modelInput\":{\"prompt\":\"hi\"}}\n");

    rapidjson::Document d;
    d.Parse(create_job_body(c, j).c_str());
    ASSERT_FALSE(d.HasParseError());
    EXPECT_STREQ(d["jobName"].GetString(), "bgw-1");
    EXPECT_STREQ(d["clientRequestToken"].GetString(), "bgw-1");  // idempotent resubmission
    EXPECT_STREQ(d["roleArn"].GetString(), "arn:aws:iam::123456789012:role/batch");
    EXPECT_STREQ(d["modelId"].GetString(), "m");
    EXPECT_STREQ(d["inputDataConfig"]["s3InputDataConfig"]["s3Uri"].GetString(),
                 "s3://bucket/gw/input/bgw-1.jsonl");
    EXPECT_STREQ(d["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"].GetString(),
                 "s3://bucket/gw/output/");
    EXPECT_STREQ(d["modelInvocationType"].GetString(), "Converse");
}

TEST(batch_book, output_lines_give_each_record_its_output_or_error) {
    auto lines = parse_output(
        "{\"recordId\":\"r1\",\"modelInput\":{},\"modelOutput\":{\"a\":1}}\n"
        "{\"recordId\":\"r2\",\"modelInput\":{},\"error\":{\"errorCode\":400,"
        "\"errorMessage\":\"bad\"}}\n"
        "not json\n"
        "{\"modelOutput\":{}}\n");
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(lines[0].record_id, "r1");
    EXPECT_EQ(lines[0].output, R"({"a":1})");
    EXPECT_TRUE(lines[0].error.empty());
    EXPECT_EQ(lines[1].record_id, "r2");
    EXPECT_EQ(lines[1].error, R"({"errorCode":400,"errorMessage":"bad"})");
    EXPECT_TRUE(is_terminal_status("PartiallyCompleted"));
    EXPECT_FALSE(is_terminal_status("InProgress"));
    EXPECT_FALSE(has_output("Failed"));
}

}  // namespace
