/* redis_tls.c - OpenSSL contexts for rediss:// connections, and the words
 * for a TLS failure.
 *
 * One SSL_CTX per distinct set of options (CA file or directory, client
 * certificate and key, insecure), made on first use and kept until exit:
 * loading the system CA store costs milliseconds, and a worker opens a
 * connection per handler. Contexts verify the server's certificate chain
 * against the system CAs (or --tls-ca) and, per connection (see
 * redis_stream.c), its name; TLS 1.2 is the oldest version offered.
 *
 * Failures are turned into one sentence naming the server and the fix, the
 * way a user meets them: an untrusted certificate, a name that does not
 * match, a client certificate the server wants, a plain-TCP port.
 */
#include "redis_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

struct jr_tls {
  SSL_CTX *ctx;
  char *key;          /* "ca\ncert\nkey\ninsecure": the cache key */
  int insecure;
  jr_tls *next;
};

static jr_tls *all_tls;

/* The reason of the most recent OpenSSL error, or fallback. Clears the
 * thread's error queue. */
static const char *ssl_reason(const char *fallback) {
  static char buf[256];
  unsigned long e = ERR_peek_last_error();
  if (e == 0) {
    ERR_clear_error();
    return fallback;
  }
  const char *r = ERR_reason_error_string(e);
  if (r) snprintf(buf, sizeof buf, "%s", r);
  else ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

/* Never prompt on the terminal for a key's pass phrase: an encrypted key
 * fails to load instead, with a message saying so. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
  (void)buf; (void)size; (void)rwflag; (void)u;
  return 0;
}

/* Returns the shared context for these options (each may be NULL), made on
 * first use. On failure returns NULL with a sentence naming the file and the
 * fix in err. The context lives until jr_tls_free_all. */
jr_tls *jr_tls_get(const char *ca, const char *cert, const char *key, int insecure, char *err,
                   size_t errlen) {
  char k[4200];
  snprintf(k, sizeof k, "%s\n%s\n%s\n%d", ca ? ca : "", cert ? cert : "", key ? key : "",
           insecure != 0);
  for (jr_tls *t = all_tls; t; t = t->next)
    if (strcmp(t->key, k) == 0) return t;
  if ((cert == NULL) != (key == NULL)) {
    snprintf(err, errlen, "a client certificate needs both --tls-cert FILE and --tls-key FILE "
                          "(tls_cert and tls_key); only %s was given", cert ? "the certificate" : "the key");
    return NULL;
  }
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == NULL) {
    snprintf(err, errlen, "cannot create a TLS context: %s", ssl_reason("out of memory"));
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (insecure) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok;
    if (ca) {
      struct stat st;
      if (stat(ca, &st) != 0) {
        snprintf(err, errlen, "cannot read the CA file %s given with --tls-ca (tls_ca): %s", ca,
                 strerror(errno));
        SSL_CTX_free(ctx);
        return NULL;
      }
      ok = S_ISDIR(st.st_mode) ? SSL_CTX_load_verify_locations(ctx, NULL, ca)
                               : SSL_CTX_load_verify_locations(ctx, ca, NULL);
      if (!ok) {
        snprintf(err, errlen, "cannot load the CA certificates in %s (--tls-ca): %s: give a PEM file "
                 "of CA certificates", ca, ssl_reason("no certificates found"));
        SSL_CTX_free(ctx);
        return NULL;
      }
    } else if (!SSL_CTX_set_default_verify_paths(ctx)) {
      snprintf(err, errlen, "cannot load the system CA certificates: %s (pass --tls-ca FILE)",
               ssl_reason("unknown error"));
      SSL_CTX_free(ctx);
      return NULL;
    }
  }
  if (cert) {
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
      snprintf(err, errlen, "cannot load the client certificate %s (--tls-cert): %s: give a PEM "
               "certificate (chain)", cert, ssl_reason("unreadable"));
      SSL_CTX_free(ctx);
      return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
      snprintf(err, errlen, "cannot load the client key %s (--tls-key): %s: give an unencrypted "
               "PEM private key", key, ssl_reason("unreadable"));
      SSL_CTX_free(ctx);
      return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      snprintf(err, errlen, "the client key %s does not belong to the certificate %s: %s", key,
               cert, ssl_reason("mismatch"));
      SSL_CTX_free(ctx);
      return NULL;
    }
  }
  jr_tls *t = calloc(1, sizeof *t);
  if (t == NULL || (t->key = strdup(k)) == NULL) {
    free(t);
    SSL_CTX_free(ctx);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  t->ctx = ctx;
  t->insecure = insecure != 0;
  t->next = all_tls;
  all_tls = t;
  if (insecure)
    jr_log(2, "TLS without certificate checks (--tls-insecure): anyone on the network path can "
              "read and change the traffic to Redis; use --tls-ca FILE instead");
  return t;
}

SSL_CTX *jr_tls_ctx(const jr_tls *t) { return t->ctx; }
int jr_tls_insecure(const jr_tls *t) { return t->insecure; }

/* Writes into out the clause for a handshake that failed with ssl_err
 * (SSL_get_error's answer), to follow "cannot connect to redis at ADDR: ";
 * name is the name the certificate had to carry. Uses the verification
 * result first, then OpenSSL's error queue (cleared). */
void jr_tls_handshake_error(SSL *ssl, int ssl_err, const char *name, char *out, size_t n) {
  long v = SSL_get_verify_result(ssl);
  if (v != X509_V_OK) {
    ERR_clear_error();
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) {
      snprintf(out, n, "TLS handshake failed: the server's certificate is not valid for the name "
               "'%s' (%s): connect with a name the certificate lists (or set tls_server_name), or "
               "give the server a certificate that lists this one", name,
               X509_verify_cert_error_string(v));
    } else {
      snprintf(out, n, "TLS handshake failed: the server's certificate is not trusted (%s): pass "
               "the CA that signed it with --tls-ca FILE (env JOBRT_TLS_CA, option tls_ca), or "
               "--tls-insecure to skip the check (not for production)",
               X509_verify_cert_error_string(v));
    }
    return;
  }
  jr_tls_read_error(ssl, ssl_err, out, n);
}

/* Writes into out the clause for a TLS failure after the handshake (or one
 * with no verification problem): an alert from the server, a plain-TCP
 * port, a lost connection. Clears the error queue. */
void jr_tls_read_error(SSL *ssl, int ssl_err, char *out, size_t n) {
  (void)ssl;
  unsigned long e = ERR_peek_last_error();
  int reason = e ? ERR_GET_REASON(e) : 0;
  const char *why = ssl_reason(ssl_err == SSL_ERROR_SYSCALL ? "the connection was closed during the TLS exchange"
                                                             : "unknown TLS error");
  const char *hint = "";
  if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG)
    hint = " (is that a plain TCP port? use redis:// for it)";
  else if (reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED ||
           reason == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE ||
           reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE)
    hint = ": the server wants a client certificate it trusts: pass --tls-cert FILE and "
           "--tls-key FILE (env JOBRT_TLS_CERT, JOBRT_TLS_KEY)";
  else if (reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA)
    hint = ": the server does not trust our client certificate (--tls-cert): have it signed "
           "by a CA the server trusts (its tls-ca-cert-file)";
  snprintf(out, n, "TLS failed: %s%s", why, hint);
}

/* Frees every context (at exit, for leak checkers). */
void jr_tls_free_all(void) {
  while (all_tls) {
    jr_tls *t = all_tls;
    all_tls = t->next;
    SSL_CTX_free(t->ctx);
    free(t->key);
    free(t);
  }
}
