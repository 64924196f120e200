#include "support/redis_server.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "fakes/test_pki.hpp"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace bgw::test {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

/// A file descriptor closed on scope exit.
struct fd_guard {
    int fd = -1;
    ~fd_guard() {
        if (fd >= 0) ::close(fd);
    }
};

sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/// A loopback port nobody listens on now (the kernel's pick for an ephemeral bind).
std::uint16_t free_port() {
    fd_guard s{::socket(AF_INET, SOCK_STREAM, 0)};
    sockaddr_in a = loopback(0);
    socklen_t len = sizeof a;
    if (s.fd < 0 || ::bind(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(s.fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        throw std::runtime_error("redis_server: no free port");
    }
    return ntohs(a.sin_port);
}

/// Whether something on `port` accepts a connection and, unless `tls`, answers an inline PING
/// (any reply: +PONG, or -NOAUTH with a password), within `wait`.
bool answers(std::uint16_t port, bool tls, std::chrono::milliseconds wait) {
    fd_guard s{::socket(AF_INET, SOCK_STREAM, 0)};
    if (s.fd < 0) return false;
    sockaddr_in a = loopback(port);
    if (::connect(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return false;
    if (tls) return true;  // a TLS listener is up once it accepts; PING needs a handshake
    const char ping[] = "PING\r\n";
    if (::send(s.fd, ping, sizeof ping - 1, MSG_NOSIGNAL) !=
        static_cast<ssize_t>(sizeof ping - 1)) {
        return false;
    }
    pollfd p{s.fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) != 1) return false;
    char buf[64];
    return ::recv(s.fd, buf, sizeof buf, 0) > 0 && (buf[0] == '+' || buf[0] == '-');
}

void write_file(const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::binary);
    f << text;
    if (!f) throw std::runtime_error("redis_server: cannot write " + path);
}

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

}  // namespace

redis_server::redis_server(redis_server_options opts) : opts_(std::move(opts)) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "bgw-redis-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("redis_server: mkdtemp");
    dir_ = tmpl;
    if (opts_.tls) {
        auto pki = make_test_pki("localhost");
        ca_pem_ = pki.ca_pem;
        write_file(dir_ + "/ca.pem", pki.ca_pem);
        write_file(dir_ + "/cert.pem", pki.cert_pem);
        write_file(dir_ + "/key.pem", pki.key_pem);
    }
    // The port is free when picked but not reserved: a test running in parallel may take it
    // first, and then this server exits at once (address in use). Pick again.
    for (int attempt = 0;; ++attempt) {
        port_ = free_port();
        launch();
        if (wait_ready()) return;
        if (attempt == 2) {
            throw std::runtime_error("redis-server exited at start, 3 times; its log:\n" +
                                     read_file(dir_ + "/redis.log"));
        }
    }
}

redis_server::~redis_server() {
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
}

void redis_server::launch() {
    std::vector<std::string> args = {
        "redis-server", "--bind", "127.0.0.1", "--save",           "", "--appendonly", "no",
        "--dir",        dir_,     "--logfile", dir_ + "/redis.log"};
    if (opts_.tls) {
        args.insert(args.end(),
                    {"--port", "0", "--tls-port", std::to_string(port_), "--tls-cert-file",
                     dir_ + "/cert.pem", "--tls-key-file", dir_ + "/key.pem", "--tls-ca-cert-file",
                     dir_ + "/ca.pem", "--tls-auth-clients", "no"});
    } else {
        args.insert(args.end(), {"--port", std::to_string(port_)});
    }
    if (!opts_.password.empty()) args.insert(args.end(), {"--requirepass", opts_.password});

    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // posix_spawn, not fork: the test process may have threads (and ASan's shadow memory).
    pid_t pid = -1;
    if (::posix_spawnp(&pid, "redis-server", nullptr, nullptr, argv.data(), environ) != 0) {
        throw std::runtime_error("redis_server: cannot run redis-server (is it installed?)");
    }
    pid_ = pid;
    paused_ = false;
}

bool redis_server::wait_ready() {
    const auto deadline = steady::now() + 15s;
    while (steady::now() < deadline) {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            return false;
        }
        if (answers(port_, opts_.tls, 200ms)) return true;
        // Not listening yet: poll again shortly (the server starts in milliseconds).
        pollfd none{-1, 0, 0};
        ::poll(&none, 0, 10);
    }
    throw std::runtime_error("redis-server did not answer within 15 s; its log:\n" +
                             read_file(dir_ + "/redis.log"));
}

void redis_server::pause() {
    if (pid_ > 0 && !paused_ && ::kill(pid_, SIGSTOP) == 0) paused_ = true;
}

void redis_server::resume() {
    if (pid_ > 0 && paused_ && ::kill(pid_, SIGCONT) == 0) paused_ = false;
}

void redis_server::stop() {
    if (pid_ <= 0) return;
    resume();
    ::kill(pid_, SIGTERM);
    // Redis exits within milliseconds of SIGTERM (nothing to save); past 5 s, SIGKILL.
    const auto deadline = steady::now() + 5s;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
        if (steady::now() > deadline) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, &status, 0);
            break;
        }
        pollfd none{-1, 0, 0};
        ::poll(&none, 0, 5);
    }
    pid_ = -1;
}

void redis_server::restart() {
    stop();
    launch();
    if (!wait_ready()) {
        throw std::runtime_error("redis-server exited at restart; its log:\n" +
                                 read_file(dir_ + "/redis.log"));
    }
}

}  // namespace bgw::test
