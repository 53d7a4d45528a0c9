//! The chart's event-flow matrix (`services.<name>.events.consumes` and `extraDurables` in
//! deploy/helm/jetmart/values.yaml, from which the NATS permissions and KEDA triggers are
//! rendered) says exactly what the code consumes: each service's `CONSUMES` list.

use std::collections::BTreeMap;

use jetmart_kit::consumes::Consumes;

/// stream -> sorted filter subjects.
type Matrix = BTreeMap<String, Vec<String>>;

fn matrix(consumes: &Consumes) -> Matrix {
    consumes
        .filters()
        .into_iter()
        .map(|(stream, mut filters)| {
            filters.sort();
            (stream.name.to_owned(), filters)
        })
        .collect()
}

fn chart_services() -> serde_norway::Mapping {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/helm/jetmart/values.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let values: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    values["services"].as_mapping().unwrap().clone()
}

fn chart_matrix(events: &serde_norway::Value, key: &str) -> Matrix {
    let Some(block) = events.get(key) else {
        return Matrix::new();
    };
    block
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(stream, list)| {
            let mut filters: Vec<String> = list
                .as_sequence()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_owned())
                .collect();
            filters.sort();
            (stream.as_str().unwrap().to_owned(), filters)
        })
        .collect()
}

#[test]
fn chart_consumes_what_the_code_consumes() {
    let code: BTreeMap<&str, Matrix> = BTreeMap::from([
        (jetmart_order::NAME, matrix(&jetmart_order::CONSUMES)),
        (
            jetmart_inventory::NAME,
            matrix(&jetmart_inventory::CONSUMES),
        ),
        (jetmart_payment::NAME, matrix(&jetmart_payment::CONSUMES)),
        (
            jetmart_notification::NAME,
            matrix(&jetmart_notification::CONSUMES),
        ),
        (jetmart_survey::NAME, matrix(&jetmart_survey::CONSUMES)),
        (
            jetmart_analytics::NAME,
            matrix(&jetmart_analytics::CONSUMES),
        ),
    ]);
    let chart = chart_services();
    let mut names: Vec<&str> = chart.keys().map(|k| k.as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        code.keys().copied().collect::<Vec<_>>(),
        "a service is in the chart or the code only"
    );
    for (name, expected) in &code {
        let events = &chart[*name]["events"];
        assert_eq!(
            &chart_matrix(events, "consumes"),
            expected,
            "services.{name}.events.consumes differs from jetmart_{name}::CONSUMES"
        );
    }

    // Durables not named after their service: only the order read model's projection, on the
    // streams its list reads.
    let projection: Matrix = matrix(&jetmart_order::PROJECTION_CONSUMES)
        .into_keys()
        .map(|stream| (stream, vec![jetmart_order::projection::CONSUMER.to_owned()]))
        .collect();
    assert_eq!(
        chart_matrix(&chart["order"]["events"], "extraDurables"),
        projection
    );
    for (name, service) in chart.iter().filter(|(k, _)| k.as_str() != Some("order")) {
        assert!(
            service["events"].get("extraDurables").is_none(),
            "{name:?} has extra durables the code does not create"
        );
    }
}
