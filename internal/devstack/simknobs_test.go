package devstack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/integrations/mealplanner"
)

// simAnswer is what a simulator answered over HTTP.
type simAnswer struct {
	status int
	header http.Header
	body   []byte
}

// errorCode is the code of the services' error body, "" when the body is not
// one.
func (a simAnswer) errorCode() string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(a.body, &e)
	return e.Error.Code
}

func (a simAnswer) errorMessage() string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(a.body, &e)
	return e.Error.Message
}

// callSim sends one request as a vendor's client would, with plain
// net/http, so the simulators' wire behaviour is tested apart from our
// wrapper. body is marshalled unless it is already []byte.
func callSim(t *testing.T, method, url, apiKey, idempotencyKey string, body any) simAnswer {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, ok := body.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(body); err != nil {
				t.Fatalf("marshal: %v", err)
			}
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, r)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if apiKey != "" {
		req.Header.Set("X-Api-Key", apiKey)
	}
	if idempotencyKey != "" {
		req.Header.Set("Idempotency-Key", idempotencyKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return simAnswer{status: resp.StatusCode, header: resp.Header, body: b}
}

func startMealPlanner(t *testing.T) *devstack.MealPlanner {
	t.Helper()
	s, err := devstack.StartMealPlanner(testLogger(t))
	if err != nil {
		t.Fatalf("StartMealPlanner: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

var smallMealPlan = mealplanner.MealPlanRequest{Days: 1, KcalTarget: 2000, Diet: mealplanner.DietOmnivore}

// postMealPlan sends smallMealPlan (varied by n so bodies differ) with key.
func postMealPlan(t *testing.T, s *devstack.MealPlanner, key string) simAnswer {
	t.Helper()
	return callSim(t, http.MethodPost, s.URL()+"/v1/meal-plans", s.APIKey(), key, smallMealPlan)
}

// TestSimKnobs covers the machinery all three simulators share, through the
// meal planner.
func TestSimKnobs(t *testing.T) {
	t.Run("Auth", func(t *testing.T) {
		s := startMealPlanner(t)
		for _, key := range []string{"", "wrong"} {
			a := callSim(t, http.MethodPost, s.URL()+"/v1/meal-plans", key, "k1", smallMealPlan)
			if a.status != http.StatusUnauthorized || a.errorCode() != "unauthorized" {
				t.Fatalf("X-Api-Key %q: %d %s, want 401 unauthorized", key, a.status, a.body)
			}
		}
		if a := postMealPlan(t, s, "k1"); a.status != http.StatusOK {
			t.Fatalf("right key: %d %s", a.status, a.body)
		}
	})

	t.Run("ErrorRate", func(t *testing.T) {
		s := startMealPlanner(t)
		count := func() int {
			failed := 0
			for i := range 200 {
				a := postMealPlan(t, s, "rate-"+string(rune('a'+i%26))+strings.Repeat("x", i/26))
				switch {
				case a.status == http.StatusServiceUnavailable && a.errorCode() == "unavailable":
					failed++
				case a.status != http.StatusOK:
					t.Fatalf("request %d: %d %s", i, a.status, a.body)
				}
			}
			return failed
		}
		s.SetKnobs(devstack.SimKnobs{ErrorRate: 0.3})
		first := count()
		if first < 40 || first > 80 {
			t.Fatalf("%d of 200 requests failed at error rate 0.3, want about 60", first)
		}
		// SetKnobs restarts the sequence: the same share, the same requests.
		s.SetKnobs(devstack.SimKnobs{ErrorRate: 0.3})
		if again := count(); again != first {
			t.Fatalf("second run failed %d requests, first %d: the sequence is not deterministic", again, first)
		}
	})

	t.Run("RateLimitBurst", func(t *testing.T) {
		s := startMealPlanner(t)
		s.SetKnobs(devstack.SimKnobs{RateLimitBurst: 2, RetryAfterSeconds: 7})
		for i := range 2 {
			a := postMealPlan(t, s, "burst")
			if a.status != http.StatusTooManyRequests || a.errorCode() != "rate_limited" || a.header.Get("Retry-After") != "7" {
				t.Fatalf("request %d of the burst: %d Retry-After %q %s, want 429 rate_limited with Retry-After 7",
					i, a.status, a.header.Get("Retry-After"), a.body)
			}
		}
		if a := postMealPlan(t, s, "burst"); a.status != http.StatusOK {
			t.Fatalf("after the burst: %d %s, want 200", a.status, a.body)
		}
		if k := s.Knobs(); k.RateLimitBurst != 0 || k.RetryAfterSeconds != 7 {
			t.Fatalf("Knobs() after the burst = %+v, want the burst used up", k)
		}
		// Retry-After defaults to one second.
		s.SetKnobs(devstack.SimKnobs{RateLimitBurst: 1})
		if a := postMealPlan(t, s, "burst2"); a.header.Get("Retry-After") != "1" {
			t.Fatalf("Retry-After without RetryAfterSeconds = %q, want 1", a.header.Get("Retry-After"))
		}
	})

	t.Run("Outage", func(t *testing.T) {
		s := startMealPlanner(t)
		s.SetKnobs(devstack.SimKnobs{Outage: true})
		for i := range 3 {
			if a := postMealPlan(t, s, "o"); a.status != http.StatusServiceUnavailable || a.errorCode() != "unavailable" {
				t.Fatalf("request %d in an outage: %d %s, want 503 unavailable", i, a.status, a.body)
			}
		}
		s.SetKnobs(devstack.SimKnobs{})
		if a := postMealPlan(t, s, "o"); a.status != http.StatusOK {
			t.Fatalf("after the outage: %d %s, want 200 (failures are not stored for replay)", a.status, a.body)
		}
	})

	t.Run("Latency", func(t *testing.T) {
		s := startMealPlanner(t)
		s.SetKnobs(devstack.SimKnobs{Latency: 150 * time.Millisecond})
		start := time.Now()
		if a := postMealPlan(t, s, "slow"); a.status != http.StatusOK {
			t.Fatalf("%d %s", a.status, a.body)
		}
		if took := time.Since(start); took < 150*time.Millisecond {
			t.Fatalf("answer took %v, want at least the 150ms latency", took)
		}
	})

	t.Run("IdempotentReplay", func(t *testing.T) {
		s := startMealPlanner(t)
		first := postMealPlan(t, s, "same-key")
		second := postMealPlan(t, s, "same-key")
		if first.status != http.StatusOK || second.status != http.StatusOK || !bytes.Equal(first.body, second.body) {
			t.Fatalf("replay: %d %s then %d %s, want the same 200 twice", first.status, first.body, second.status, second.body)
		}
		other := smallMealPlan
		other.KcalTarget = 2500
		a := callSim(t, http.MethodPost, s.URL()+"/v1/meal-plans", s.APIKey(), "same-key", other)
		if a.status != http.StatusUnprocessableEntity || a.errorCode() != "idempotency_key_reused" {
			t.Fatalf("same key, other body: %d %s, want 422 idempotency_key_reused", a.status, a.body)
		}
		// A refused request is replayed too: the first answer is the answer.
		bad := mealplanner.MealPlanRequest{Days: 99, KcalTarget: 2000, Diet: "omnivore"}
		b1 := callSim(t, http.MethodPost, s.URL()+"/v1/meal-plans", s.APIKey(), "bad-key", bad)
		b2 := callSim(t, http.MethodPost, s.URL()+"/v1/meal-plans", s.APIKey(), "bad-key", bad)
		if b1.status != http.StatusBadRequest || b2.status != http.StatusBadRequest || !bytes.Equal(b1.body, b2.body) {
			t.Fatalf("replayed 400: %d %s then %d %s", b1.status, b1.body, b2.status, b2.body)
		}

		reqs := s.Requests()
		if len(reqs) != 5 {
			t.Fatalf("recorded %d requests, want 5", len(reqs))
		}
		want := []struct {
			key      string
			status   int
			replayed bool
		}{{"same-key", 200, false}, {"same-key", 200, true}, {"same-key", 422, false}, {"bad-key", 400, false}, {"bad-key", 400, true}}
		for i, w := range want {
			r := reqs[i]
			if r.IdempotencyKey != w.key || r.Status != w.status || r.Replayed != w.replayed || r.APIKey != s.APIKey() ||
				r.Method != http.MethodPost || r.Path != "/v1/meal-plans" || len(r.Body) == 0 || r.Time.IsZero() {
				t.Errorf("request %d recorded as %+v, want key %s status %d replayed %v", i, r, w.key, w.status, w.replayed)
			}
		}
	})

	t.Run("IdempotencyKeyRequired", func(t *testing.T) {
		s := startMealPlanner(t)
		for _, key := range []string{"", strings.Repeat("k", 129), "tab\tkey"} {
			a := postMealPlan(t, s, key)
			if a.status != http.StatusBadRequest || a.errorCode() != "invalid_request" || !strings.Contains(a.errorMessage(), "Idempotency-Key") {
				t.Fatalf("Idempotency-Key %q: %d %s, want 400 naming the header", key, a.status, a.body)
			}
		}
		if a := postMealPlan(t, s, strings.Repeat("k", 128)); a.status != http.StatusOK {
			t.Fatalf("128-character key: %d %s, want 200", a.status, a.body)
		}
	})

	t.Run("HTTPKnobs", func(t *testing.T) {
		s := startMealPlanner(t)
		a := callSim(t, http.MethodPut, s.URL()+"/_sim/knobs", "", "",
			[]byte(`{"latency":"20ms","error_rate":0.25,"rate_limit_burst":3,"retry_after_seconds":2,"outage":true,"absurd":true}`))
		if a.status != http.StatusOK {
			t.Fatalf("PUT /_sim/knobs: %d %s", a.status, a.body)
		}
		want := devstack.SimKnobs{Latency: 20 * time.Millisecond, ErrorRate: 0.25, RateLimitBurst: 3, RetryAfterSeconds: 2, Outage: true, Absurd: true}
		if got := s.Knobs(); got != want {
			t.Fatalf("Knobs() after PUT = %+v, want %+v", got, want)
		}
		g := callSim(t, http.MethodGet, s.URL()+"/_sim/knobs", "", "", nil)
		var got devstack.SimKnobs
		if err := json.Unmarshal(g.body, &got); err != nil || got != want || !strings.Contains(string(g.body), `"latency":"20ms"`) {
			t.Fatalf("GET /_sim/knobs = %s (%v), want %+v with the latency as a duration string", g.body, err, want)
		}
		for _, bad := range []string{`{"error_rate":2}`, `{"latency":"soon"}`, `{"outage":"yes"}`, `{"unknown":1}`} {
			if a := callSim(t, http.MethodPut, s.URL()+"/_sim/knobs", "", "", []byte(bad)); a.status != http.StatusBadRequest {
				t.Errorf("PUT %s: %d %s, want 400", bad, a.status, a.body)
			}
		}
		if len(s.Requests()) != 0 {
			t.Fatalf("knob requests were recorded: %+v", s.Requests())
		}
	})

	t.Run("UnknownEndpoint", func(t *testing.T) {
		s := startMealPlanner(t)
		a := callSim(t, http.MethodPost, s.URL()+"/v1/nothing", s.APIKey(), "k", []byte(`{}`))
		if a.status != http.StatusNotFound || a.errorCode() != "not_found" {
			t.Fatalf("unknown path: %d %s, want 404 not_found", a.status, a.body)
		}
	})

	t.Run("Env", func(t *testing.T) {
		// Everything else configured, so Start needs no database.
		others := map[string]string{
			"REDIS_URL": "redis://cache:6379/0", "MONGO_URL": "mongodb://mongo/", "S3_ENDPOINT": "https://s3.example",
			"NXG_FCM_ENDPOINT": "http://fcm.local/v1", "SENTRY_DSN": "https://k@sentry.example/1",
		}
		env := map[string]string{
			"NXG_SIM_WORKOUTPLANNER_LATENCY": "5ms", "NXG_SIM_WORKOUTPLANNER_ERROR_RATE": "0.5",
			"NXG_SIM_MEALDETECTOR_ABSURD": "true", "NXG_SIM_MEALPLANNER_OUTAGE": "1",
		}
		for k, v := range others {
			env[k] = v
		}
		st, err := devstack.Start(context.Background(), devstack.Options{Logger: testLogger(t), Configured: env})
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		t.Cleanup(func() { _ = st.Close() })
		if got := st.WorkoutPlanner.Knobs(); got != (devstack.SimKnobs{Latency: 5 * time.Millisecond, ErrorRate: 0.5}) {
			t.Errorf("workout planner knobs = %+v", got)
		}
		if got := st.MealDetector.Knobs(); got != (devstack.SimKnobs{Absurd: true}) {
			t.Errorf("meal detector knobs = %+v", got)
		}
		if got := st.MealPlanner.Knobs(); got != (devstack.SimKnobs{Outage: true}) {
			t.Errorf("meal planner knobs = %+v", got)
		}
		e := st.Env()
		if e["NXG_MEALPLANNER_URL"] != st.MealPlanner.URL() || e["NXG_MEALPLANNER_API_KEY"] != st.MealPlanner.APIKey() {
			t.Fatalf("Env() = %v, want the meal planner's URL and key", e)
		}
		a := callSim(t, http.MethodPost, e["NXG_MEALPLANNER_URL"]+"/v1/meal-plans", e["NXG_MEALPLANNER_API_KEY"], "k", smallMealPlan)
		if a.status != http.StatusServiceUnavailable {
			t.Fatalf("meal planner started with NXG_SIM_MEALPLANNER_OUTAGE=1 answered %d, want 503", a.status)
		}

		for name, v := range map[string]string{
			"NXG_SIM_MEALPLANNER_LATENCY": "fast", "NXG_SIM_MEALDETECTOR_ERROR_RATE": "1.5", "NXG_SIM_WORKOUTPLANNER_OUTAGE": "maybe",
		} {
			bad := map[string]string{name: v}
			for k, v := range others {
				bad[k] = v
			}
			if _, err := devstack.Start(context.Background(), devstack.Options{Logger: testLogger(t), Configured: bad}); err == nil ||
				!strings.Contains(err.Error(), name) {
				t.Errorf("Start with %s=%s: %v, want an error naming the variable", name, v, err)
			}
		}

		// A configured service URL means no simulator.
		configured := map[string]string{"NXG_WORKOUTPLANNER_URL": "https://planner.example"}
		for k, v := range others {
			configured[k] = v
		}
		st2, err := devstack.Start(context.Background(), devstack.Options{Logger: testLogger(t), Configured: configured})
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		t.Cleanup(func() { _ = st2.Close() })
		if st2.WorkoutPlanner != nil || st2.MealDetector == nil || st2.MealPlanner == nil {
			t.Fatalf("Start with NXG_WORKOUTPLANNER_URL set: %+v, want only the workout planner skipped", st2)
		}
		if _, ok := st2.Env()["NXG_WORKOUTPLANNER_API_KEY"]; ok {
			t.Fatalf("Env() sets NXG_WORKOUTPLANNER_API_KEY although the user configured the planner")
		}
	})
}
