//! Prints the agent API's OpenAPI document.
fn main() {
    println!(
        "{}",
        serde_json::to_string_pretty(&drover_api::openapi::document()).unwrap_or_default()
    );
}
