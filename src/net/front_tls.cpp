// The TLS listener's context (make_front_tls in bgw/net/gateway.hpp says what it is for).

#include "bgw/net/gateway.hpp"

#include <fstream>
#include <string>

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace bgw::net {
namespace {

/// The server's choice among the client's ALPN offers, in the server's order: HTTP/2, then
/// HTTP/1.1. A client that offers neither goes on without ALPN (HTTP/1.1).
int select_alpn(SSL*,
                const unsigned char** out,
                unsigned char* out_len,
                const unsigned char* offered,
                unsigned int offered_len,
                void*) {
    static constexpr unsigned char ours[] = "\x02h2\x08http/1.1";
    unsigned char* chosen = nullptr;
    if (SSL_select_next_proto(&chosen, out_len, ours, sizeof ours - 1, offered, offered_len) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

/// OpenSSL's reason for the last failure, or `fallback`.
std::string openssl_reason(const beast::error_code& ec) {
    const unsigned long e = ERR_peek_last_error();
    ERR_clear_error();
    if (e != 0) {
        const char* r = ERR_reason_error_string(e);
        if (r) return r;
    }
    return ec.message();
}

error file_error(std::string_view key, const std::string& path, const std::string& why) {
    return validation_error("tls." + std::string(key) + " \"" + path + "\": " + why);
}

}  // namespace

result<std::shared_ptr<asio::ssl::context>> make_front_tls(const config::tls_listener_config& t) {
    for (auto [key, path] : {std::pair{"cert_file", &t.cert_file}, {"key_file", &t.key_file}}) {
        if (!std::ifstream(*path)) return file_error(key, *path, "cannot be read");
    }
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                     asio::ssl::context::no_tlsv1_1);
    SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
    beast::error_code ec;
    ctx->use_certificate_chain_file(t.cert_file, ec);
    if (ec)
        return file_error("cert_file", t.cert_file,
                          "not a PEM certificate chain: " + openssl_reason(ec));
    ctx->use_private_key_file(t.key_file, asio::ssl::context::pem, ec);
    if (ec)
        return file_error("key_file", t.key_file, "not a PEM private key: " + openssl_reason(ec));
    if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
        ERR_clear_error();
        return file_error(
            "key_file", t.key_file,
            "does not match the certificate in tls.cert_file \"" + t.cert_file + "\"");
    }
    SSL_CTX_set_alpn_select_cb(ctx->native_handle(), select_alpn, nullptr);
    return ctx;
}

}  // namespace bgw::net
