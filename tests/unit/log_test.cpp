// Log lines: JSON objects that always parse, or text whose values cannot forge fields or lines.

#include "bgw/obs/log.hpp"

#include <chrono>

#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace {

using namespace std::chrono_literals;
using bgw::obs::event;
using bgw::obs::level;
using bgw::obs::log_format;

const auto when =
    std::chrono::sys_days{std::chrono::year{2026} / 11 / 23} + 15h + 30min + 41s + 123ms;

TEST(log_event, json_line_has_time_level_event_then_fields_in_order) {
    event e("request");
    e.str("id", "r-1").unum("status", 200).num("attempts", 2).real("latency_ms", 1.5);
    e.boolean("on_demand", true).list("tried", {"us-east-1: throttled", "a\"b"});
    EXPECT_EQ(e.render(log_format::json, level::info, when),
              R"({"time":"2026-11-23T15:30:41.123Z","level":"info","event":"request","id":"r-1",)"
              R"("status":200,"attempts":2,"latency_ms":1.5,"on_demand":true,)"
              R"("tried":["us-east-1: throttled","a\"b"]})");
}

TEST(log_event, json_escapes_what_a_field_holds) {
    event e("stopping");
    e.str("error", "bad \"quote\"\nnext line\\");
    auto line = e.render(log_format::json, level::error, when);
    EXPECT_EQ(line.find('\n'), std::string::npos);
    rapidjson::Document d;
    d.Parse(line.c_str());
    ASSERT_FALSE(d.HasParseError()) << line;
    EXPECT_STREQ(d["error"].GetString(), "bad \"quote\"\nnext line\\");
    EXPECT_STREQ(d["level"].GetString(), "error");
}

TEST(log_event, bytes_that_are_not_utf8_become_replacement_characters) {
    event e("request");
    e.str("model",
          "a\xff\xfe"
          "b")
        .list("tried", {"caf\xc3"});
    auto line = e.render(log_format::json, level::info, when);
    rapidjson::Document d;
    d.Parse<rapidjson::kParseValidateEncodingFlag>(line.c_str());
    ASSERT_FALSE(d.HasParseError()) << line;
    EXPECT_STREQ(d["model"].GetString(),
                 "a\xEF\xBF\xBD\xEF\xBF\xBD"
                 "b");
    EXPECT_STREQ(d["tried"][0].GetString(), "caf\xEF\xBF\xBD");
}

TEST(valid_utf8, keeps_utf8_and_replaces_each_bad_byte) {
    using bgw::obs::valid_utf8;
    const std::string replacement = "\xEF\xBF\xBD";
    EXPECT_EQ(valid_utf8("plain ascii"), "plain ascii");
    EXPECT_EQ(valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"),
              "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
    EXPECT_EQ(valid_utf8("\xFF"), replacement);
    EXPECT_EQ(valid_utf8("a\xC3"), "a" + replacement);             // truncated
    EXPECT_EQ(valid_utf8("\xC0\xAF"), replacement + replacement);  // overlong '/'
    EXPECT_EQ(valid_utf8("\xE0\x80\xAF"), replacement + replacement + replacement);
    EXPECT_EQ(valid_utf8("\xED\xA0\x80"), replacement + replacement + replacement);  // surrogate
    EXPECT_EQ(valid_utf8("\xF4\x90\x80\x80"),
              replacement + replacement + replacement + replacement);  // past U+10FFFF
}

TEST(log_event, text_line_is_readable_and_quotes_only_what_needs_it) {
    event e("request");
    e.str("operation", "Converse").unum("status", 200).real("latency_ms", 12.3456);
    e.str("error", "client went away: \"reset\"\nforged=1").str("empty", "");
    EXPECT_EQ(
        e.render(log_format::text, level::warn, when),
        "2026-11-23T15:30:41.123Z WARN  request operation=Converse status=200 "
        "latency_ms=12.346 error=\"client went away: \\\"reset\\\"\\x0aforged=1\" empty=\"\"");
}

TEST(log_format_names, parse) {
    log_format f = log_format::json;
    EXPECT_TRUE(bgw::obs::parse_log_format("text", f));
    EXPECT_EQ(f, log_format::text);
    EXPECT_TRUE(bgw::obs::parse_log_format("json", f));
    EXPECT_EQ(f, log_format::json);
    EXPECT_FALSE(bgw::obs::parse_log_format("yaml", f));
    EXPECT_TRUE(bgw::obs::is_log_level("debug"));
    EXPECT_TRUE(bgw::obs::is_log_level("off"));
    EXPECT_FALSE(bgw::obs::is_log_level("verbose"));
}

}  // namespace
