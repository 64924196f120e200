// The batch spool on disk: replay after a crash, a torn last line cut off, appends that follow
// on a line of their own, and the record API over what was replayed, including which caller
// key sees which record.

#include "bgw/net/batch_service.hpp"

#include <filesystem>
#include <fstream>
#include <map>
#include <utility>
#include <vector>

#include "support/fixtures.hpp"
#include "unit/slurp.hpp"
#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace {

namespace fs = std::filesystem;
namespace http = boost::beast::http;

struct temp_dir {
    fs::path path = fs::temp_directory_path() /
                    ("bgw-spool-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand()));
    ~temp_dir() { fs::remove_all(path); }
};

bgw::config::config with_spool(const fs::path& dir) {
    return bgw::test::config_from(
        R"({"regions":{"us-east-1":{}},"batch":{"bucket":"b-1","role_arn":"arn:aws:iam::1:role/r",)"
        R"("spool_dir":")" +
        dir.string() + R"(","min_records":5}})");
}

TEST(batch_spool, replays_records_and_cuts_a_torn_last_line) {
    temp_dir dir;
    std::string first;
    {
        bgw::net::batch_service s(with_spool(dir.path));
        auto id = s.accept("us-east-1", "m", "InvokeModel", R"({"prompt":"hi"})", "");
        ASSERT_TRUE(id);
        first = *id;
    }
    const auto journal = dir.path / "journal.jsonl";
    const auto intact = bgw::test::slurp(journal).value_or("");
    ASSERT_EQ(intact.back(), '\n');
    {
        // A crash in the middle of the next append.
        std::ofstream out(journal, std::ios::app | std::ios::binary);
        out << R"({"e":"accept","id":"torn","reg)";
    }
    bgw::net::batch_service again(with_spool(dir.path));
    EXPECT_EQ(bgw::test::slurp(journal).value_or(""), intact);  // the torn tail is gone
    auto res = again.answer(http::verb::get, "/gateway/batch/records/" + first, "", "req");
    EXPECT_EQ(res.result_int(), 202u);
    rapidjson::Document d;
    d.Parse(res.body().c_str());
    EXPECT_STREQ(d["status"].GetString(), "queued");
    EXPECT_EQ(again.answer(http::verb::get, "/gateway/batch/records/torn", "", "req").result_int(),
              404u);
    // The next record starts on a line of its own and survives another restart.
    auto second = again.accept("us-east-1", "m", "InvokeModel", R"({"prompt":"again"})", "");
    ASSERT_TRUE(second);
    bgw::net::batch_service third(with_spool(dir.path));
    EXPECT_EQ(
        third.answer(http::verb::get, "/gateway/batch/records/" + *second, "", "r").result_int(),
        202u);
}

using response = http::response<http::string_body>;

response get(bgw::net::batch_service& s, std::string_view id, std::string_view caller) {
    return s.answer(http::verb::get, "/gateway/batch/records/" + std::string(id), caller, "req");
}

/// `/gateway/batch/jobs` as `caller`: job id -> the records it counts.
std::map<std::string, std::uint64_t> jobs(bgw::net::batch_service& s, std::string_view caller) {
    auto res = s.answer(http::verb::get, "/gateway/batch/jobs", caller, "req");
    EXPECT_EQ(res.result_int(), 200u);
    rapidjson::Document d;
    d.Parse(res.body().c_str());
    std::map<std::string, std::uint64_t> out;
    for (const auto& j : d["jobs"].GetArray())
        out[j["jobId"].GetString()] = j["records"].GetUint64();
    return out;
}

TEST(batch_spool, a_record_is_read_and_cancelled_only_with_the_key_that_spooled_it) {
    temp_dir dir;
    std::string mine, theirs;
    {
        bgw::net::batch_service s(with_spool(dir.path));
        auto a = s.accept("us-east-1", "m", "InvokeModel", R"({"prompt":"a"})", "app");
        auto b = s.accept("us-east-1", "m", "InvokeModel", R"({"prompt":"b"})", "other");
        ASSERT_TRUE(a && b);
        mine = *a;
        theirs = *b;
    }
    // The owner is in the spool: it holds after a restart.
    bgw::net::batch_service s(with_spool(dir.path));
    EXPECT_EQ(get(s, mine, "app").result_int(), 202u);
    EXPECT_EQ(get(s, theirs, "other").result_int(), 202u);
    // Another key's record answers exactly as an unknown id does (only the id differs).
    const auto unknown = get(s, "no-such-record", "app");
    const auto hidden = get(s, theirs, "app");
    EXPECT_EQ(hidden.result_int(), 404u);
    EXPECT_EQ(hidden["x-amzn-ErrorType"], unknown["x-amzn-ErrorType"]);
    EXPECT_EQ(hidden[http::field::content_type], unknown[http::field::content_type]);
    auto expected = unknown.body();
    expected.replace(expected.find("no-such-record"), 14, theirs);
    EXPECT_EQ(hidden.body(), expected);
    // Nor can it be cancelled by another key: the same 404, and the record stays queued.
    const auto cancel =
        s.answer(http::verb::delete_, "/gateway/batch/records/" + theirs, "app", "req");
    EXPECT_EQ(cancel.result_int(), 404u);
    EXPECT_EQ(cancel.body(), expected);
    EXPECT_EQ(get(s, theirs, "other").result_int(), 202u);
    // No caller keys configured: every record, as before.
    EXPECT_EQ(get(s, mine, "").result_int(), 202u);
    EXPECT_EQ(get(s, theirs, "").result_int(), 202u);
}

TEST(batch_spool, old_lines_are_owned_by_nobody_and_the_job_list_counts_only_the_callers) {
    temp_dir dir;
    fs::create_directories(dir.path);
    {
        // A journal with a line from before owners, then records of two keys in two jobs.
        std::ofstream out(dir.path / "journal.jsonl", std::ios::binary);
        out << R"({"e":"accept","id":"old","region":"us-east-1","model":"m","op":"InvokeModel",)"
            << R"("t":1,"input":{"prompt":"hi"}})" << '\n';
        std::int64_t t = 2;
        for (const auto& [id, owner] : std::vector<std::pair<std::string, std::string>>{
                 {"ra", "app"}, {"rb1", "other"}, {"rb2", "other"}}) {
            bgw::batch::record r;
            r.id = id;
            r.region = "us-east-1";
            r.model = "m";
            r.operation = "InvokeModel";
            r.input = "{}";
            r.accepted_ms = t++;
            r.owner = owner;
            out << bgw::batch::accept_event(r) << '\n';
        }
        bgw::batch::job j1;
        j1.id = "j1";
        j1.region = "us-east-1";
        j1.model = "m";
        j1.operation = "InvokeModel";
        j1.records = {"old", "ra", "rb1"};
        auto j2 = j1;
        j2.id = "j2";
        j2.records = {"rb2"};
        out << bgw::batch::job_event(j1) << '\n' << bgw::batch::job_event(j2) << '\n';
    }
    bgw::net::batch_service s(with_spool(dir.path));
    // Unowned: no key can tell whose it is, so none reads it; without keys it reads as before.
    EXPECT_EQ(get(s, "old", "app").result_int(), 404u);
    EXPECT_EQ(get(s, "old", "other").result_int(), 404u);
    EXPECT_EQ(get(s, "old", "").result_int(), 202u);
    EXPECT_EQ(get(s, "ra", "app").result_int(), 202u);
    using counts = std::map<std::string, std::uint64_t>;
    EXPECT_EQ(jobs(s, "app"), (counts{{"j1", 1}}));
    EXPECT_EQ(jobs(s, "other"), (counts{{"j1", 1}, {"j2", 1}}));
    EXPECT_EQ(jobs(s, "nobody"), counts{});
    EXPECT_EQ(jobs(s, ""), (counts{{"j1", 3}, {"j2", 1}}));
}

TEST(batch_spool, an_unusable_spool_dir_is_a_start_up_error) {
    temp_dir dir;
    fs::create_directories(dir.path);
    std::ofstream(dir.path / "file") << "x";
    EXPECT_THROW(bgw::net::batch_service(with_spool(dir.path / "file" / "sub")),
                 std::runtime_error);
}

}  // namespace
