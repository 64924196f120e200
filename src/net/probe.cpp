// `bedrock-gateway --probe URL`: the container HEALTHCHECK's client, so the image needs no curl.

#include "bgw/net/gateway.hpp"

#include <chrono>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>

namespace bgw::net {
namespace {

namespace http = beast::http;

awaitable<int> get_once(std::string host, std::string port, std::string target, std::ostream& err) {
    auto ex = co_await asio::this_coro::executor;
    asio::ip::tcp::resolver resolver(ex);
    auto [rec, endpoints] = co_await resolver.async_resolve(host, port, use_nothrow);
    if (rec) {
        err << "probe: cannot resolve " << host << ": " << rec.message() << "\n";
        co_return 1;
    }
    beast::tcp_stream stream(ex);
    stream.expires_after(std::chrono::seconds(3));  // one bound for connect, send and answer
    auto [cec, ep] = co_await stream.async_connect(endpoints, use_nothrow);
    if (cec) {
        err << "probe: cannot connect to " << host << ":" << port << ": " << cec.message() << "\n";
        co_return 1;
    }
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, host + ":" + port);
    req.set(http::field::user_agent, "bedrock-gateway-probe");
    req.keep_alive(false);
    auto [wec, wn] = co_await http::async_write(stream, req, use_nothrow);
    beast::flat_buffer buf;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024);
    auto [hec, hn] = wec ? std::pair{wec, std::size_t{0}}
                         : co_await http::async_read(stream, buf, parser, use_nothrow);
    if (hec) {
        err << "probe: no answer from " << host << ":" << port << ": " << hec.message() << "\n";
        co_return 1;
    }
    const auto status = parser.get().result_int();
    if (status < 200 || status > 299) {
        err << "probe: " << target << " answered " << status << ": " << parser.get().body() << "\n";
        co_return 1;
    }
    co_return 0;
}

}  // namespace

int probe(std::string_view url, std::ostream& err) {
    auto u = boost::urls::parse_uri(url);
    if (!u || u->scheme() != "http" || u->encoded_host().empty()) {
        err << "probe: '" << url << "' is not an http:// URL\n";
        return 1;
    }
    std::string host(u->encoded_host_address());
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    std::string port = u->has_port() ? std::string(u->port()) : "80";
    // Built once from the chosen view: assigning "/" afterwards trips a GCC 12 -O3 false
    // positive (-Wrestrict/-Wstringop-overflow in the inlined copy, GCC PR 105329).
    const std::string_view resource = u->encoded_resource();
    const std::string target(resource.empty() ? std::string_view("/") : resource);
    asio::io_context ioc;
    int code = 1;
    asio::co_spawn(ioc, get_once(host, port, target, err),
                   [&](const std::exception_ptr& e, int rc) {
                       if (!e) code = rc;
                   });
    ioc.run();
    return code;
}

}  // namespace bgw::net
