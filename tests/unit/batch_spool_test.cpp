// The batch spool on disk: replay after a crash, a torn last line cut off, appends that follow
// on a line of their own, and the record API over what was replayed.

#include "bgw/net/batch_service.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

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
    auto c = bgw::config::parse_config(
        R"({"regions":{"us-east-1":{}},"batch":{"bucket":"b-1","role_arn":"arn:aws:iam::1:role/r",)"
        R"("spool_dir":")" +
        dir.string() + R"(","min_records":5}})");
    EXPECT_TRUE(c) << c.error().message;
    return *c;
}

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

TEST(batch_spool, replays_records_and_cuts_a_torn_last_line) {
    temp_dir dir;
    std::string first;
    {
        bgw::net::batch_service s(with_spool(dir.path));
        auto id = s.accept("us-east-1", "m", "InvokeModel", R"({"prompt":"hi"})");
        ASSERT_TRUE(id);
        first = *id;
    }
    const auto journal = dir.path / "journal.jsonl";
    const auto intact = slurp(journal);
    ASSERT_EQ(intact.back(), '\n');
    {
        // A crash in the middle of the next append.
        std::ofstream out(journal, std::ios::app | std::ios::binary);
        out << R"({"e":"accept","id":"torn","reg)";
    }
    bgw::net::batch_service again(with_spool(dir.path));
    EXPECT_EQ(slurp(journal), intact);  // the torn tail is gone
    auto res = again.answer(http::verb::get, "/gateway/batch/records/" + first, "req");
    EXPECT_EQ(res.result_int(), 202u);
    rapidjson::Document d;
    d.Parse(res.body().c_str());
    EXPECT_STREQ(d["status"].GetString(), "queued");
    EXPECT_EQ(again.answer(http::verb::get, "/gateway/batch/records/torn", "req").result_int(),
              404u);
    // The next record starts on a line of its own and survives another restart.
    auto second = again.accept("us-east-1", "m", "InvokeModel", R"({"prompt":"again"})");
    ASSERT_TRUE(second);
    bgw::net::batch_service third(with_spool(dir.path));
    EXPECT_EQ(third.answer(http::verb::get, "/gateway/batch/records/" + *second, "r").result_int(),
              202u);
}

TEST(batch_spool, an_unusable_spool_dir_is_a_start_up_error) {
    temp_dir dir;
    fs::create_directories(dir.path);
    std::ofstream(dir.path / "file") << "x";
    EXPECT_THROW(bgw::net::batch_service(with_spool(dir.path / "file" / "sub")),
                 std::runtime_error);
}

}  // namespace
