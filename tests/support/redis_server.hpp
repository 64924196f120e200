#pragma once
/// A real Redis for the shared-state tests: Debian's redis-server on a free loopback port, no
/// persistence, in a temporary directory, optionally with a password and/or TLS (certificates
/// from a throw-away test CA). It can be paused (SIGSTOP: a server that accepts but never
/// answers), stopped and started again on the same port. Stopped in its destructor.

#include <cstdint>
#include <string>

#include <sys/types.h>

namespace bgw::test {

struct redis_server_options {
    std::string password;  ///< --requirepass when not empty
    bool tls = false;      ///< serve TLS only (--tls-port), certificate for DNS:localhost
};

class redis_server {
public:
    /// Starts the server and waits (bounded) until it answers. Throws std::runtime_error with
    /// the server's log if it does not.
    explicit redis_server(redis_server_options opts = {});
    ~redis_server();
    redis_server(const redis_server&) = delete;
    redis_server& operator=(const redis_server&) = delete;

    std::uint16_t port() const { return port_; }           ///< the TLS port when tls
    const std::string& ca_pem() const { return ca_pem_; }  ///< the CA that signed its certificate

    void pause();    ///< SIGSTOP: connections are accepted by the kernel, never answered
    void resume();   ///< SIGCONT
    void stop();     ///< terminates it and waits for the process
    void restart();  ///< starts it again on the same port and waits until it answers

private:
    void launch();
    /// Waits (bounded) until the server answers: false if it exited; throws past 15 s.
    bool wait_ready();

    redis_server_options opts_;
    std::string dir_;
    std::uint16_t port_ = 0;
    std::string ca_pem_;
    pid_t pid_ = -1;
    bool paused_ = false;
};

}  // namespace bgw::test
