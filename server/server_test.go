package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSelfSignedCert writes a certificate for 127.0.0.1 and its key, and
// returns their paths and a pool trusting the certificate.
func writeSelfSignedCert(t *testing.T) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "nxg test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

func TestHTTPServerTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, roots := writeSelfSignedCert(t)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.Proto))
	})
	srv := NewHTTPServer("127.0.0.1:0", handler, true, slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(ln, certFile, keyFile) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	url := "https://" + ln.Addr().String() + "/"

	t.Run("TLS13WithHTTP2", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			ForceAttemptHTTP2: true,
		}}
		defer client.CloseIdleConnections()
		res, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.TLS == nil || res.TLS.Version != tls.VersionTLS13 {
			t.Fatalf("negotiated %v, want TLS 1.3", res.TLS)
		}
		if res.ProtoMajor != 2 {
			t.Fatalf("protocol %s, want HTTP/2 over TLS", res.Proto)
		}
	})

	t.Run("TLS12IsRefused", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS12},
		}}
		defer client.CloseIdleConnections()
		_, err := client.Get(url)
		if err == nil {
			t.Fatal("a TLS 1.2 client was served")
		}
		// The server answers with the protocol_version alert.
		if !strings.Contains(err.Error(), "protocol version not supported") {
			t.Fatalf("error %v, want a protocol_version alert", err)
		}
	})
}

func TestHTTPServerCleartext(t *testing.T) {
	t.Parallel()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.Proto))
	})
	srv := NewHTTPServer("127.0.0.1:0", handler, false, slog.New(slog.DiscardHandler))
	if srv.ReadTimeout != 0 || srv.WriteTimeout != 0 {
		t.Fatal("read/write timeouts would cut long-lived streams")
	}
	if srv.ReadHeaderTimeout == 0 || srv.IdleTimeout == 0 {
		t.Fatal("slow or idle clients are not bounded")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	for _, tc := range []struct {
		name  string
		h2c   bool
		proto string
	}{{"HTTP1", false, "HTTP/1.1"}, {"H2C", true, "HTTP/2.0"}} {
		t.Run(tc.name, func(t *testing.T) {
			transport := &http.Transport{}
			if tc.h2c {
				transport.Protocols = new(http.Protocols)
				transport.Protocols.SetUnencryptedHTTP2(true)
			}
			defer transport.CloseIdleConnections()
			res, err := (&http.Client{Transport: transport}).Get("http://" + ln.Addr().String() + "/")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.Proto != tc.proto {
				t.Fatalf("proto %s, want %s", res.Proto, tc.proto)
			}
		})
	}
}
